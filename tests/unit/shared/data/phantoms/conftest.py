"""What the phantom render pins are keyed by (docs/decisions/0009-phantom-render-pins-per-simd-kernel.md)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def exp_kernel() -> str:
    """The SIMD kernel numpy dispatches float32 exp to on this machine."""
    try:
        from numpy.lib.introspect import opt_func_info
    except ImportError:  # numpy < 2
        return "unknown"
    return opt_func_info(func_name="^exp$", signature="float32")["exp"]["ff"]["current"]

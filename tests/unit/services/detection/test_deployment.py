"""The Detection application's Serve config args: batching is configurable, and nonsense is refused
when the config is built, not at the first request."""

from __future__ import annotations

import pytest
from ray import serve

from twinray.services.detection.deployment import build_app


@pytest.mark.parametrize("args", [{}, {"max_batch_size": 1, "batch_wait_timeout_s": 0}, {"max_batch_size": "16"}])
def test_batching_args_build_an_application(args):
    assert isinstance(build_app(args), serve.Application)


@pytest.mark.parametrize("args", [{"max_batch_size": 0}, {"batch_wait_timeout_s": -1}, {"batch_wait_timeout_s": "nan"}])
def test_impossible_batching_is_refused(args):
    with pytest.raises(ValueError, match="max_batch_size >= 1 and batch_wait_timeout_s >= 0"):
        build_app(args)

"""uint16 <-> [0, 1]: every stored intensity survives the round trip, in float32 and float64."""

from __future__ import annotations

import numpy as np
import pytest

from twinray.shared.platform.imaging.unit_range import to_uint16, to_unit

EVERY_VALUE = np.arange(65536, dtype=np.uint16)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_uint16_value_round_trips(dtype):
    unit = to_unit(EVERY_VALUE, dtype)
    assert unit.dtype == dtype and unit[0] == 0.0 and unit[-1] == 1.0
    np.testing.assert_array_equal(to_uint16(unit), EVERY_VALUE)


def test_out_of_range_values_clip_and_halves_round_to_even():
    values = np.array([-0.5, 1.5, 0.5 / 65535, 1.5 / 65535, 2.5 / 65535], np.float64)
    np.testing.assert_array_equal(to_uint16(values), [0, 65535, 0, 2, 2])

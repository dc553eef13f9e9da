"""The one conversion between stored 16-bit intensities and the [0, 1] floats every model sees."""

from __future__ import annotations

import numpy as np

UINT16_MAX = 65535.0


def to_unit(images: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """uint16 intensities -> floats in [0, 1] (value / 65535), float32 unless `dtype` says otherwise."""
    return np.asarray(images).astype(dtype) / UINT16_MAX


def to_uint16(values: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] -> uint16 (value * 65535, clipped, rounded half to even) in the input's own
    precision; exact for values that came from `to_unit` in float64."""
    return np.rint(np.clip(values, 0.0, 1.0) * UINT16_MAX).astype(np.uint16)

"""A phantom as the services receive it: a 16-bit PNG with its pixel spacing (the demo's gRPC calls)."""

from __future__ import annotations

import numpy as np

from twinray.shared.data.phantoms.dataset import PhantomArrays
from twinray.shared.platform.imaging import encode_float01_png16
from twinray.shared.platform.imaging.unit_range import to_unit
from twinray.v1 import common_pb2


def phantom_image(arrays: PhantomArrays, index: int) -> common_pb2.Image:
    """Image `index` of `arrays` as a request's Image message, spacing included."""
    spacing = common_pb2.PixelSpacing(row_mm=arrays.spacing_mm, col_mm=arrays.spacing_mm)
    return common_pb2.Image(png=encode_float01_png16(to_unit(arrays.image[index], np.float64)), spacing=spacing)

"""Building the common protobuf messages that several services return."""

from __future__ import annotations

import numpy as np

from twinray.shared.data.anatomy import ANATOMY_CLASSES
from twinray.shared.platform.imaging import encode_label_png
from twinray.v1 import common_pb2


def anatomy_label_map(labels: np.ndarray) -> common_pb2.LabelMap:
    """An anatomy label map (H,W uint8, classes of shared/data/anatomy.py) as a LabelMap message."""
    height, width = labels.shape
    classes = [common_pb2.LabelClass(index=i, name=n) for i, n in enumerate(ANATOMY_CLASSES)]
    return common_pb2.LabelMap(height=height, width=width, png=encode_label_png(labels), classes=classes)

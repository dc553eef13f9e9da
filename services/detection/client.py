"""Thin Python client of the Detection service, and the picture of its answer."""

from __future__ import annotations

import io
from collections.abc import Iterable

import grpc
import numpy as np
from PIL import Image, ImageDraw

from twinray.services.common.client import routing_metadata
from twinray.shared.platform.imaging import sniff_and_decode
from twinray.v1 import common_pb2, detection_pb2, detection_pb2_grpc

BOX_COLOUR = (255, 80, 0)


def detect(
    channel: grpc.Channel,
    image: common_pb2.Image,
    *,
    version: str = "",
    include_residual: bool = False,
    include_twin: bool = False,
    min_score: float | None = None,
    timeout_s: float = 60.0,
) -> detection_pb2.DetectResponse:
    """Detection/Detect; `min_score` None = the detector's own threshold (chosen on val)."""
    stub = detection_pb2_grpc.DetectionStub(channel)
    request = detection_pb2.DetectRequest(
        image=image,
        model=common_pb2.ModelRef(version=version),
        include_residual=include_residual,
        include_twin=include_twin,
        min_score=min_score,
    )
    return stub.Detect(request, metadata=routing_metadata("detection"), timeout=timeout_s)


def boxes_png(image: bytes, lesions: Iterable[detection_pb2.Lesion]) -> bytes:
    """The image (PNG or DICOM file bytes) as an RGB PNG with each lesion's box, pathology and score drawn."""
    pixels = sniff_and_decode(image).pixels
    canvas = Image.fromarray(np.round(pixels * 255).astype(np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    for lesion in lesions:
        box = lesion.box
        corners = [box.x_min, box.y_min, max(box.x_min, box.x_max - 1), max(box.y_min, box.y_max - 1)]  # edges -> pixels
        draw.rectangle(corners, outline=BOX_COLOUR)
        draw.text((box.x_min + 2, box.y_min + 1), f"{box.label} {box.score:.2f}", fill=BOX_COLOUR)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()

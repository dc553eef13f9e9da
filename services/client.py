"""Thin gRPC client: reads a local image, adds the routing metadata, calls a TwinRay service."""
from __future__ import annotations

from pathlib import Path

import grpc

from shared.errors import InvalidInput
from shared.telemetry import metadata_for_current_span
from twinray.v1 import common_pb2, normal_synthesis_pb2, normal_synthesis_pb2_grpc, segmentation_pb2, segmentation_pb2_grpc


def image_message(path: Path, spacing_mm: tuple[float, float] | None = None) -> common_pb2.Image:
    """PNG or DICOM file bytes as an Image message (the server decodes and validates)."""
    data = path.read_bytes()
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        image = common_pb2.Image(png=data)
    elif data[128:132] == b"DICM" or path.suffix.lower() in {".dcm", ".dicom"}:
        image = common_pb2.Image(dicom=data)
    else:
        raise InvalidInput(f"{path} is neither a PNG nor a DICOM file")
    if spacing_mm:
        image.spacing.CopyFrom(common_pb2.PixelSpacing(row_mm=spacing_mm[0], col_mm=spacing_mm[1]))
    return image


def routing_metadata(application: str) -> list[tuple[str, str]]:
    """Ray Serve picks the application from this metadata; trace context rides along."""
    return [("application", application), *metadata_for_current_span()]


def segment(
    channel: grpc.Channel, image: common_pb2.Image, *, version: str = "", timeout_s: float = 60.0
) -> segmentation_pb2.SegmentResponse:
    stub = segmentation_pb2_grpc.SegmentationStub(channel)
    request = segmentation_pb2.SegmentRequest(image=image, model=common_pb2.ModelRef(version=version))
    return stub.Segment(request, metadata=routing_metadata("segmentation"), timeout=timeout_s)


def synthesize(
    channel: grpc.Channel,
    image: common_pb2.Image,
    *,
    anatomy_png: bytes = b"",
    version: str = "",
    segmentation_version: str = "",
    timeout_s: float = 60.0,
) -> normal_synthesis_pb2.SynthesizeResponse:
    """NormalSynthesis/Synthesize; `anatomy_png` (8-bit label PNG of the image) skips segmentation."""
    stub = normal_synthesis_pb2_grpc.NormalSynthesisStub(channel)
    request = normal_synthesis_pb2.SynthesizeRequest(
        image=image,
        model=common_pb2.ModelRef(version=version),
        segmentation_model=common_pb2.ModelRef(version=segmentation_version),
    )
    if anatomy_png:
        request.anatomy.CopyFrom(common_pb2.LabelMap(png=anatomy_png))
    return stub.Synthesize(request, metadata=routing_metadata("normal-synthesis"), timeout=timeout_s)

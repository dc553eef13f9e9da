"""What every Python client of a TwinRay service needs: an Image message from a local file and the
routing metadata Ray Serve's gRPC ingress picks the application by."""

from __future__ import annotations

from pathlib import Path

from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.telemetry import metadata_for_current_span
from twinray.v1 import common_pb2


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

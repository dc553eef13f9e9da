"""What every Python client sends: the Image message of a local file, and the routing metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydicom.data import get_testdata_file

from twinray.services.common.client import image_message, routing_metadata
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.imaging import encode_float01_png16
from twinray.shared.platform.telemetry import configure_tracing, tracer


def test_a_png_file_is_sent_as_png(tmp_path: Path) -> None:
    path = tmp_path / "image.bin"  # recognised by its signature, not its name
    path.write_bytes(encode_float01_png16(np.zeros((16, 16), np.float32)))
    message = image_message(path)
    assert message.WhichOneof("source") == "png" and message.png == path.read_bytes()
    assert not message.HasField("spacing")


def test_a_dicom_file_is_sent_as_dicom_by_content_or_by_name(tmp_path: Path) -> None:
    part10 = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    assert part10[128:132] == b"DICM"
    (tmp_path / "scan").write_bytes(part10)
    assert image_message(tmp_path / "scan").WhichOneof("source") == "dicom"
    (tmp_path / "bare.DCM").write_bytes(part10[132:])  # no preamble: only the name says DICOM
    assert image_message(tmp_path / "bare.DCM").dicom == part10[132:]


def test_spacing_rides_along(tmp_path: Path) -> None:
    path = tmp_path / "image.png"
    path.write_bytes(encode_float01_png16(np.zeros((16, 16), np.float32)))
    message = image_message(path, spacing_mm=(0.2, 0.3))
    assert (message.spacing.row_mm, message.spacing.col_mm) == (0.2, 0.3)


def test_anything_else_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    with pytest.raises(InvalidInput, match="neither a PNG nor a DICOM"):
        image_message(path)


def test_routing_metadata_names_the_application_and_carries_the_trace() -> None:
    assert routing_metadata("segmentation") == [("application", "segmentation")]
    configure_tracing(Settings.from_env({}), "test", processor=SimpleSpanProcessor(InMemorySpanExporter()))
    with tracer().start_as_current_span("client") as span:
        metadata = routing_metadata("normal-synthesis")
    assert metadata[0] == ("application", "normal-synthesis")
    assert metadata[1][0] == "traceparent" and f"{span.get_span_context().trace_id:032x}" in metadata[1][1]

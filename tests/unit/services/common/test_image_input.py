"""decode_image_message: every source of a twinray.v1.Image (PNG, DICOM, tensor, artifact) decodes to
the same pixels the imaging decoders give, with its spacing, and each bad message is a precise error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydicom.data import get_testdata_file

from twinray.services.common.image_input import decode_image_message
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import IntegrityError, InvalidInput, NotFound, ResourceExhausted
from twinray.shared.platform.imaging import ImageLimits, decode_dicom, encode_float01_png16
from twinray.shared.platform.storage import LocalStore
from twinray.shared.platform.telemetry import configure_tracing, tracer
from twinray.v1 import common_pb2

LIMITS = ImageLimits()
PIXELS = np.linspace(0.0, 1.0, 24 * 40, dtype=np.float32).reshape(24, 40)  # 40 wide, 24 high


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path, "twinray")


@pytest.fixture(scope="module")
def ct_small() -> bytes:
    return Path(get_testdata_file("CT_small.dcm")).read_bytes()


def tensor(values: np.ndarray, dtype: int) -> common_pb2.Image:
    return common_pb2.Image(tensor=common_pb2.Tensor(shape=list(values.shape), dtype=dtype, data=values.tobytes()))


def test_png(store: LocalStore) -> None:
    decoded = decode_image_message(common_pb2.Image(png=encode_float01_png16(PIXELS)), LIMITS, store)
    assert (decoded.source, decoded.height, decoded.width, decoded.bits_stored) == ("png", 24, 40, 16)
    np.testing.assert_allclose(decoded.pixels, PIXELS, atol=0.5 / 65535)
    assert decoded.spacing_mm is None


def test_dicom_keeps_its_own_spacing(store: LocalStore, ct_small: bytes) -> None:
    decoded = decode_image_message(common_pb2.Image(dicom=ct_small), LIMITS, store)
    reference = decode_dicom(ct_small, LIMITS)
    assert decoded.source == "dicom" and decoded.spacing_mm == reference.spacing_mm is not None
    np.testing.assert_array_equal(decoded.pixels, reference.pixels)


@pytest.mark.parametrize(
    ("dtype", "values", "scale"),
    [
        (common_pb2.DTYPE_UINT8, (PIXELS * 255).astype(np.uint8), 255.0),
        (common_pb2.DTYPE_UINT16, (PIXELS * 65535).astype(np.uint16), 65535.0),
        (common_pb2.DTYPE_FLOAT32, PIXELS, 1.0),
    ],
)
def test_tensor_of_each_dtype(store: LocalStore, dtype: int, values: np.ndarray, scale: float) -> None:
    decoded = decode_image_message(tensor(values, dtype), LIMITS, store)
    assert decoded.source == "tensor" and decoded.bits_stored == values.dtype.itemsize * 8
    np.testing.assert_array_equal(decoded.pixels, values.astype(np.float32) / np.float32(scale))


def test_tensor_without_a_dtype_is_invalid(store: LocalStore) -> None:
    with pytest.raises(InvalidInput, match="DTYPE_UINT8, DTYPE_UINT16 or DTYPE_FLOAT32"):
        decode_image_message(tensor(PIXELS, common_pb2.DTYPE_UNSPECIFIED), LIMITS, store)


@pytest.mark.parametrize("bucket", ["", "twinray"])
def test_artifact_in_this_servers_bucket(store: LocalStore, ct_small: bytes, bucket: str) -> None:
    png = store.put_bytes("inputs/a.png", encode_float01_png16(PIXELS))
    dicom = store.put_bytes("inputs/b.dcm", ct_small)
    decoded = decode_image_message(common_pb2.Image(artifact=common_pb2.ArtifactRef(bucket=bucket, key=png.key)), LIMITS, store)
    np.testing.assert_allclose(decoded.pixels, PIXELS, atol=0.5 / 65535)
    ref = common_pb2.ArtifactRef(bucket=bucket, key=dicom.key, sha256=dicom.sha256)
    assert decode_image_message(common_pb2.Image(artifact=ref), LIMITS, store).source == "dicom"  # sniffed, not named


def test_bad_artifact_references(store: LocalStore) -> None:
    png = store.put_bytes("inputs/a.png", encode_float01_png16(PIXELS))

    def decode(**ref: str) -> None:
        decode_image_message(common_pb2.Image(artifact=common_pb2.ArtifactRef(**ref)), LIMITS, store)

    with pytest.raises(InvalidInput, match="'elsewhere' is not this server's bucket 'twinray'"):
        decode(bucket="elsewhere", key=png.key)
    with pytest.raises(InvalidInput, match="artifact.key is empty"):
        decode(bucket="twinray")
    with pytest.raises(NotFound):
        decode(key="inputs/missing.png")
    with pytest.raises(IntegrityError):
        decode(key=png.key, sha256="0" * 64)


def test_an_empty_image_is_invalid(store: LocalStore) -> None:
    with pytest.raises(InvalidInput, match="image is empty: set one of png, dicom, tensor or artifact"):
        decode_image_message(common_pb2.Image(), LIMITS, store)


def test_the_limits_apply_to_every_source(store: LocalStore) -> None:
    small = ImageLimits(max_bytes=200)  # the PNG has a few hundred bytes, the tensor 3840
    with pytest.raises(ResourceExhausted):
        decode_image_message(common_pb2.Image(png=encode_float01_png16(PIXELS)), small, store)
    with pytest.raises(ResourceExhausted):
        decode_image_message(tensor(PIXELS, common_pb2.DTYPE_FLOAT32), small, store)
    with pytest.raises(InvalidInput, match="the limit is 32 per side"):
        decode_image_message(tensor(PIXELS, common_pb2.DTYPE_FLOAT32), ImageLimits(max_side=32), store)


def test_spacing_overrides_the_sources_own(store: LocalStore, ct_small: bytes) -> None:
    spacing = common_pb2.PixelSpacing(row_mm=0.25, col_mm=0.5)
    png = common_pb2.Image(png=encode_float01_png16(PIXELS), spacing=spacing)
    dicom = common_pb2.Image(dicom=ct_small, spacing=spacing)
    assert decode_image_message(png, LIMITS, store).spacing_mm == (0.25, 0.5)
    assert decode_image_message(dicom, LIMITS, store).spacing_mm == (0.25, 0.5)


@pytest.mark.parametrize(("row", "col"), [(0.0, 0.5), (0.5, 100.0), (-1.0, 1.0)])
def test_spacing_outside_0_to_100_mm_is_invalid(store: LocalStore, row: float, col: float) -> None:
    image = common_pb2.Image(png=encode_float01_png16(PIXELS), spacing=common_pb2.PixelSpacing(row_mm=row, col_mm=col))
    with pytest.raises(InvalidInput, match="pixel spacing must be between 0 and 100 mm"):
        decode_image_message(image, LIMITS, store)


def test_the_image_size_goes_onto_the_current_span(store: LocalStore) -> None:
    exporter = InMemorySpanExporter()
    configure_tracing(Settings.from_env({}), "test", processor=SimpleSpanProcessor(exporter))
    with tracer().start_as_current_span("rpc"):
        decode_image_message(common_pb2.Image(png=encode_float01_png16(PIXELS)), LIMITS, store)
    (span,) = [span for span in exporter.get_finished_spans() if span.name == "rpc"]
    assert (span.attributes["twinray.image.height"], span.attributes["twinray.image.width"]) == (24, 40)

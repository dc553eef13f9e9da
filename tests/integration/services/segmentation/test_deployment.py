"""Segmentation over Ray Serve's real gRPC ingress: answers, provenance, tracing and every bad input."""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from twinray.services.common.client import routing_metadata
from twinray.services.segmentation.client import segment
from twinray.shared.data.anatomy import ANATOMY_CLASSES
from twinray.shared.data.phantoms.cxr import render_phantom
from twinray.shared.platform.config import Settings
from twinray.shared.platform.imaging import decode_label_png, encode_float01_png16
from twinray.shared.platform.storage import open_store
from twinray.shared.platform.telemetry import configure_tracing, current_trace_id, tracer
from twinray.v1 import common_pb2, segmentation_pb2, segmentation_pb2_grpc

pytestmark = pytest.mark.integration

CAT_DCM = Path(__import__("deid_data").__file__).parent / "data" / "animals" / "cat.dcm"


def _phantom_png(size: int = 64) -> bytes:
    return encode_float01_png16(render_phantom(12345, size).image)


def test_png_gets_a_full_resolution_label_map_with_areas_and_provenance(grpc_channel, trained_segmenter):
    image = common_pb2.Image(png=_phantom_png(96), spacing=common_pb2.PixelSpacing(row_mm=0.5, col_mm=0.5))
    response = segment(grpc_channel, image)
    labels = decode_label_png(response.label_map.png)
    assert labels.shape == (96, 96) == (response.label_map.height, response.label_map.width)
    assert [c.name for c in response.label_map.classes] == list(ANATOMY_CLASSES)
    assert sum(a.pixels for a in response.areas) == 96 * 96
    for area in response.areas:
        assert area.spacing_known and area.area_mm2 == pytest.approx(area.pixels * 0.25)
    assert [(m.name, m.version) for m in response.provenance.models] == [("segmentation", str(trained_segmenter.version))]


def test_real_dx_radiograph_keeps_its_dicom_spacing(grpc_channel):
    response = segment(grpc_channel, common_pb2.Image(dicom=CAT_DCM.read_bytes()))
    assert (response.label_map.height, response.label_map.width) == (3072, 2614) or (
        response.label_map.width,
        response.label_map.height,
    ) == (3072, 2614)
    assert response.spacing.row_mm > 0 and all(a.spacing_known for a in response.areas)


def test_uint16_tensor_and_artifact_reference(grpc_channel, twinray_settings):
    pixels = (render_phantom(7, 64).image * 65535).astype("<u2")
    tensor = common_pb2.Tensor(shape=[64, 64], dtype=common_pb2.DTYPE_UINT16, data=pixels.tobytes())
    from_tensor = decode_label_png(segment(grpc_channel, common_pb2.Image(tensor=tensor)).label_map.png)

    ref = open_store(twinray_settings).put_bytes("inputs/phantom-7.png", encode_float01_png16(pixels / 65535.0))
    artifact = common_pb2.ArtifactRef(key=ref.key, sha256=ref.sha256)
    from_artifact = decode_label_png(segment(grpc_channel, common_pb2.Image(artifact=artifact)).label_map.png)
    assert (np.mean(from_tensor == from_artifact)) > 0.99


def test_trace_context_from_the_client_reaches_the_server(grpc_channel):
    configure_tracing(Settings.from_env(), "test-client")
    with tracer().start_as_current_span("client call"):
        sent = current_trace_id()
        response = segment(grpc_channel, common_pb2.Image(png=_phantom_png()))
    assert response.provenance.trace_id == sent


def _truncated_png() -> bytes:
    return _phantom_png()[:200]


def _dicom_without_pixels() -> bytes:
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del dataset.PixelData
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def _tensor(shape: list[int], nbytes: int, dtype: int = common_pb2.DTYPE_UINT8) -> common_pb2.Image:
    return common_pb2.Image(tensor=common_pb2.Tensor(shape=shape, dtype=dtype, data=b"\x00" * nbytes))


BAD_INPUTS = {
    "no source": (common_pb2.Image(), grpc.StatusCode.INVALID_ARGUMENT),
    "empty png bytes": (common_pb2.Image(png=b""), grpc.StatusCode.INVALID_ARGUMENT),
    "truncated png": (common_pb2.Image(png=_truncated_png()), grpc.StatusCode.INVALID_ARGUMENT),
    "not an image": (common_pb2.Image(png=b"hello, this is not a picture" * 10), grpc.StatusCode.INVALID_ARGUMENT),
    "random dicom bytes": (common_pb2.Image(dicom=bytes(range(256)) * 4), grpc.StatusCode.INVALID_ARGUMENT),
    "dicom without pixel data": (common_pb2.Image(dicom=_dicom_without_pixels()), grpc.StatusCode.INVALID_ARGUMENT),
    "zero-size tensor": (_tensor([0, 64], 0), grpc.StatusCode.INVALID_ARGUMENT),
    "over-limit tensor": (_tensor([9000, 16], 9000 * 16), grpc.StatusCode.INVALID_ARGUMENT),
    "tensor bytes mismatch": (_tensor([32, 32], 1000, common_pb2.DTYPE_UINT16), grpc.StatusCode.INVALID_ARGUMENT),
    "tensor without dtype": (_tensor([32, 32], 1024, common_pb2.DTYPE_UNSPECIFIED), grpc.StatusCode.INVALID_ARGUMENT),
    "missing artifact": (common_pb2.Image(artifact=common_pb2.ArtifactRef(key="inputs/nope.png")), grpc.StatusCode.NOT_FOUND),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_precise_status_and_one_line_message(grpc_channel, case):
    image, code = BAD_INPUTS[case]
    with pytest.raises(grpc.RpcError) as info:
        segment(grpc_channel, image)
    assert info.value.code() == code, info.value.details()
    details = info.value.details()
    assert details and "\n" not in details and "Traceback" not in details


def test_unknown_model_version_is_not_found(grpc_channel):
    with pytest.raises(grpc.RpcError) as info:
        segment(grpc_channel, common_pb2.Image(png=_phantom_png()), version="999")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "999" in info.value.details()


def test_malformed_model_version_is_invalid(grpc_channel):
    with pytest.raises(grpc.RpcError) as info:
        segment(grpc_channel, common_pb2.Image(png=_phantom_png()), version="v-two")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_plain_generated_stub_works_with_the_routing_metadata(grpc_channel):
    stub = segmentation_pb2_grpc.SegmentationStub(grpc_channel)
    request = segmentation_pb2.SegmentRequest(image=common_pb2.Image(png=_phantom_png()))
    assert stub.Segment(request, metadata=routing_metadata("segmentation")).label_map.height == 64


def test_unreachable_artifact_store_is_unavailable(grpc_channel, twinray_settings, tmp_path, closed_port):
    """A second application whose store endpoint (set the KubeRay way: runtime_env env_vars) refuses
    connections; the replica starts, and calls answer UNAVAILABLE naming the endpoint."""
    import yaml

    from twinray.services.cli.up import DEFAULT_CONFIG, deploy

    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    offline = dict(config["applications"][0], name="segmentation-offline", route_prefix="/segmentation-offline")
    offline["runtime_env"] = {"env_vars": {"TWINRAY_STORE_ENDPOINT": f"127.0.0.1:{closed_port}"}}
    config["applications"].append(offline)
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    deploy(twinray_settings, path)

    stub = segmentation_pb2_grpc.SegmentationStub(grpc_channel)
    request = segmentation_pb2.SegmentRequest(image=common_pb2.Image(png=_phantom_png()))
    try:
        with pytest.raises(grpc.RpcError) as info:
            stub.Segment(request, metadata=[("application", "segmentation-offline")], timeout=60)
    finally:
        deploy(twinray_settings)  # back to the shipped config
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert str(closed_port) in info.value.details()


def test_cli_client_writes_the_label_map(grpc_channel, twinray_settings, tmp_path, capsys):
    from twinray.services.cli.main import main

    image = tmp_path / "chest.png"
    image.write_bytes(_phantom_png(72))
    out = tmp_path / "labels.png"
    address = f"127.0.0.1:{twinray_settings.grpc_port}"
    assert main(["client", "segment", str(image), "--out", str(out), "--address", address, "--spacing", "0.5", "0.5"]) == 0
    assert decode_label_png(out.read_bytes()).shape == (72, 72)
    assert "lung_right" in capsys.readouterr().out
    assert main(["client", "segment", str(image), "--out", str(out), "--address", address, "--version", "404"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err

"""NormalSynthesis over Ray Serve's real gRPC ingress, composed with the Segmentation application
through a deployment handle; and `twinray client synthesize` against it."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from PIL import Image

from twinray.services.normal_synthesis.client import synthesize
from twinray.shared.data.anatomy import NUM_ANATOMY_CLASSES
from twinray.shared.data.phantoms.cxr import render_phantom
from twinray.shared.platform.errors import Unavailable
from twinray.shared.platform.imaging import decode_label_png, decode_png, encode_float01_png16, encode_label_png
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import open_store
from twinray.v1 import common_pb2, segmentation_pb2

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def channel(trained_normal_synthesizer, grpc_channel) -> grpc.Channel:
    """The gRPC ingress, once a normal-synthesis version is published (the app resolves "latest" on first call)."""
    return grpc_channel


def _png(size: int) -> bytes:
    return encode_float01_png16(render_phantom(4242, size, lesion_seed=7).image)


@pytest.mark.parametrize("size", [256, 64])
def test_round_trip_returns_twin_residual_anatomy_and_both_versions(channel, trained_normal_synthesizer, twinray_settings, size):
    png = _png(size)
    response = synthesize(channel, common_pb2.Image(png=png))
    twin = decode_png(response.twin_png).pixels
    assert twin.shape == (size, size)
    assert list(response.residual.shape) == [size, size] and response.residual.dtype == common_pb2.DTYPE_FLOAT32
    residual = np.frombuffer(response.residual.data, "<f4").reshape(size, size)
    np.testing.assert_allclose(residual, decode_png(png).pixels - twin, rtol=0, atol=0.5 / 65535 + 1e-6)
    labels = decode_label_png(response.anatomy.png)
    assert labels.shape == (size, size) == (response.anatomy.height, response.anatomy.width)
    assert labels.max() < NUM_ANATOMY_CLASSES and len(np.unique(labels)) > 1
    # the segmenter is the one the published model was trained with
    trained_with = ModelRegistry(open_store(twinray_settings)).load("normal-synthesis", trained_normal_synthesizer.version)
    assert [(m.name, m.version) for m in response.provenance.models] == [
        ("normal-synthesis", str(trained_normal_synthesizer.version)),
        ("segmentation", str(trained_with.config["segmentation_version"])),
    ]
    assert len(response.provenance.trace_id) == 32 and int(response.provenance.trace_id, 16) != 0


def test_a_callers_anatomy_map_is_used_instead_of_segmentation(channel):
    anatomy = render_phantom(4242, 64, lesion_seed=7).anatomy
    response = synthesize(channel, common_pb2.Image(png=_png(64)), anatomy_png=encode_label_png(anatomy))
    assert [m.name for m in response.provenance.models] == ["normal-synthesis"]
    np.testing.assert_array_equal(decode_label_png(response.anatomy.png), anatomy)


BAD = {
    "garbage bytes": (
        dict(image=common_pb2.Image(png=b"not an image at all")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not a PNG file",
    ),
    "anatomy map of another size": (
        dict(anatomy_png=encode_label_png(np.zeros((32, 48), np.uint8))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "anatomy map is 48x32 but the image is 64x64",
    ),
    "label outside the anatomy classes": (
        dict(anatomy_png=encode_label_png(np.full((64, 64), 200, np.uint8))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "anatomy map has label 200",
    ),
    "unknown normal-synthesis version": (
        dict(version="77"),
        grpc.StatusCode.NOT_FOUND,
        "model 'normal-synthesis' has no version 77",
    ),
    "unknown segmentation version (the Segmentation service's verdict)": (
        dict(segmentation_version="88"),
        grpc.StatusCode.NOT_FOUND,
        "model 'segmentation' has no version 88",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_get_a_precise_status_and_one_line(channel, case):
    fields, code, message = BAD[case]
    with pytest.raises(grpc.RpcError) as info:
        synthesize(channel, **{"image": common_pb2.Image(png=_png(64)), **fields})
    assert info.value.code() == code, info.value.details()
    assert message in info.value.details()
    assert "\n" not in info.value.details() and "Traceback" not in info.value.details()


def test_a_missing_segmentation_app_is_unavailable(channel):
    from twinray.services.common.internal_call import call_app

    request = segmentation_pb2.SegmentRequest(image=common_pb2.Image(png=_png(64)))
    assert (
        asyncio.run(call_app("Segmentation", "Segment", "segmentation", request)).label_map.height == 64
    )  # the real app answers
    with pytest.raises(Unavailable, match="Segmentation service 'no-such-app' is unavailable"):
        asyncio.run(call_app("Segmentation", "Segment", "no-such-app", request))


def test_cli_client_writes_twin_and_residual(channel, twinray_settings, tmp_path, capsys):
    from twinray.services.cli.main import main

    image = tmp_path / "chest.png"
    image.write_bytes(_png(72))
    address = f"127.0.0.1:{twinray_settings.grpc_port}"
    twin, npy, heat = tmp_path / "twin.png", tmp_path / "residual.npy", tmp_path / "residual.png"
    assert (
        main(["client", "synthesize", str(image), "--out-twin", str(twin), "--out-residual", str(npy), "--address", address]) == 0
    )
    assert "normal-synthesis v" in capsys.readouterr().out
    residual = np.load(npy)
    assert residual.dtype == np.float32 and residual.shape == (72, 72)
    np.testing.assert_allclose(residual, decode_png(image.read_bytes()).pixels - decode_png(twin.read_bytes()).pixels, atol=1e-4)
    anatomy = tmp_path / "anatomy.png"
    anatomy.write_bytes(encode_label_png(render_phantom(4242, 72, lesion_seed=7).anatomy))
    argv = ["client", "synthesize", str(image), "--out-twin", str(twin), "--out-residual", str(heat), "--anatomy", str(anatomy)]
    assert main([*argv, "--address", address]) == 0
    assert "segmentation v" not in capsys.readouterr().out
    with Image.open(heat) as heat_map:
        assert (heat_map.size, heat_map.mode) == ((72, 72), "RGB")
    assert main([*argv, "--address", address, "--version", "404"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err

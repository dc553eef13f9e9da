"""Detection over Ray Serve's real gRPC ingress, composed with the NormalSynthesis application (and
through it Segmentation) by deployment handles, its detector forward batched with `@serve.batch`;
and `twinray client detect` against it. The detector is the session's, trained on Ray Train."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from PIL import Image

from twinray.services.detection.client import detect
from twinray.shared.data.phantoms.dataset import read_phantom_split
from twinray.shared.data.phantoms.pathologies import PATHOLOGIES
from twinray.shared.data.twin_residuals import read_twin_residual_manifest, read_twin_residuals
from twinray.shared.platform.errors import Unavailable
from twinray.shared.platform.imaging import decode_png, encode_float01_png16, encode_png_u16
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import open_store
from twinray.v1 import common_pb2, detection_pb2, detection_pb2_grpc, normal_synthesis_pb2

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def channel(trained_detector, grpc_channel) -> grpc.Channel:
    """The gRPC ingress, once a detector is published (the app resolves "latest" on first call)."""
    return grpc_channel


@pytest.fixture(scope="module")
def test_split(phantom_dataset, twinray_settings):
    return read_phantom_split(open_store(twinray_settings), phantom_dataset, "test")


def _png(test_split, row: int = 0) -> bytes:
    return encode_png_u16(test_split.image[row])


def _scores(response: detection_pb2.DetectResponse) -> list[float]:
    return [lesion.box.score for lesion in response.lesions]


def test_boxes_residual_twin_and_every_model_that_answered(
    channel, test_split, trained_detector, twin_residual_dataset, twinray_settings
):
    store = open_store(twinray_settings)
    response = detect(channel, common_pb2.Image(png=_png(test_split)), include_residual=True, include_twin=True, min_score=0.0)

    assert (response.height, response.width, response.min_score) == (64, 64, 0.0)
    assert len(response.lesions) == 10  # the fixture's detections_per_image, no score floor
    for lesion in response.lesions:
        box = lesion.box
        assert 0 <= box.x_min <= box.x_max <= 64 and 0 <= box.y_min <= box.y_max <= 64
        assert 0 <= box.score <= 1 and box.label == PATHOLOGIES[lesion.class_index] and not lesion.spacing_known
    assert _scores(response) == sorted(_scores(response), reverse=True)
    # the residual the detector read is the stored one its training read, made again through the services
    residual = np.frombuffer(response.residual.data, "<f4").reshape(tuple(response.residual.shape))
    np.testing.assert_allclose(residual, read_twin_residuals(store, twin_residual_dataset, "test")[0], rtol=0, atol=3e-4)
    twin = decode_png(response.twin_png).pixels
    np.testing.assert_allclose(twin, test_split.image[0] / 65535 - residual, atol=0.5 / 65535 + 1e-6)
    made_by = read_twin_residual_manifest(store, twin_residual_dataset)["model"]
    assert [(m.name, m.version) for m in response.provenance.models] == [
        ("detection", str(trained_detector.version)),
        ("normal-synthesis", str(made_by["version"])),
        ("segmentation", str(made_by["segmenter"]["version"])),
    ]
    assert len(response.provenance.trace_id) == 32 and int(response.provenance.trace_id, 16) != 0


def test_any_size_maps_back_to_its_grid_with_mm_and_the_val_threshold_by_default(
    channel, test_split, trained_detector, twinray_settings
):
    image = np.kron(test_split.image[1] / 65535, np.ones((2, 3)))[:, :150]  # 128 x 150, not square
    spacing = common_pb2.PixelSpacing(row_mm=0.4, col_mm=0.2)
    response = detect(channel, common_pb2.Image(png=encode_float01_png16(image), spacing=spacing), min_score=0.0)
    assert (response.height, response.width) == (128, 150) and response.spacing == spacing
    for lesion in response.lesions:
        box = lesion.box
        assert 0 <= box.x_min <= box.x_max <= 150 and 0 <= box.y_min <= box.y_max <= 128 and lesion.spacing_known
        mm = [lesion.x_min_mm, lesion.y_min_mm, lesion.x_max_mm, lesion.y_max_mm]
        np.testing.assert_allclose(mm, np.array([box.x_min, box.y_min, box.x_max, box.y_max]) * [0.2, 0.4, 0.2, 0.4], rtol=1e-5)
    threshold = (
        ModelRegistry(open_store(twinray_settings)).load("detection", trained_detector.version).metrics["val_score_threshold"]
    )
    default = detect(channel, common_pb2.Image(png=encode_float01_png16(image)))
    assert default.min_score == pytest.approx(threshold)
    assert _scores(default) == [score for score in _scores(response) if score >= default.min_score]


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(channel, test_split):
    """Requests that arrive together share one detector forward; each answer is the one it gets alone
    (scores compared: a barely trained detector's near-ties may swap boxes of equal score)."""
    stub = detection_pb2_grpc.DetectionStub(channel)
    requests = [detection_pb2.DetectRequest(image=common_pb2.Image(png=_png(test_split, row)), min_score=0.0) for row in range(4)]
    metadata = [("application", "detection")]
    futures = [stub.Detect.future(request, metadata=metadata, timeout=120) for request in requests]
    for request, future in zip(requests, futures):
        alone = stub.Detect(request, metadata=metadata, timeout=120)
        together = future.result()
        np.testing.assert_allclose(_scores(together), _scores(alone), atol=1e-4)


BAD = {
    "empty image": (dict(image=common_pb2.Image()), grpc.StatusCode.INVALID_ARGUMENT, "image is empty"),
    "undecodable bytes": (dict(image=common_pb2.Image(png=b"not an image")), grpc.StatusCode.INVALID_ARGUMENT, "not a PNG"),
    "min_score outside [0, 1]": (dict(min_score=1.5), grpc.StatusCode.INVALID_ARGUMENT, "min_score must be in [0, 1], got 1.5"),
    "unknown version": (dict(version="77"), grpc.StatusCode.NOT_FOUND, "model 'detection' has no version 77"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_get_a_precise_status_and_one_line(channel, test_split, case):
    fields, code, message = BAD[case]
    with pytest.raises(grpc.RpcError) as info:
        detect(channel, **{"image": common_pb2.Image(png=_png(test_split)), **fields})
    assert info.value.code() == code, info.value.details()
    assert message in info.value.details()
    assert "\n" not in info.value.details() and "Traceback" not in info.value.details()


def test_a_missing_normal_synthesis_app_is_unavailable(channel, test_split):
    from twinray.services.detection.deployment import call_app

    request = normal_synthesis_pb2.SynthesizeRequest(image=common_pb2.Image(png=_png(test_split)))
    with pytest.raises(Unavailable, match="NormalSynthesis service 'no-such-app' is unavailable"):
        asyncio.run(call_app("NormalSynthesis", "Synthesize", "no-such-app", request))


def test_cli_client_prints_boxes_and_draws_them(channel, test_split, twinray_settings, tmp_path, capsys):
    from twinray.services.cli.main import main

    image, out = tmp_path / "chest.png", tmp_path / "boxes.png"
    image.write_bytes(_png(test_split))
    address = f"127.0.0.1:{twinray_settings.grpc_port}"
    argv = ["client", "detect", str(image), "--min-score", "0", "--out", str(out), "--address", address]
    assert main([*argv, "--spacing", "0.5", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "10 lesion(s) scoring >= 0.000 in 64x64 (detection v" in printed and " mm)" in printed
    with Image.open(out) as drawn:
        assert (drawn.size, drawn.mode) == ((64, 64), "RGB")
    assert main([*argv, "--version", "404"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err

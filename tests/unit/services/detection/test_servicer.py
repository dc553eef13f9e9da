"""The Detect logic in-process with tiny real models, composed with in-process NormalSynthesis and
Segmentation servicers (no Ray): the residual is the one the training residuals hold, boxes come back
on the input's grid, each variant reads what it was trained on, and every error a caller can cause."""

from __future__ import annotations

import asyncio
import dataclasses
import io

import numpy as np
import pytest
import torch

from twinray.services.detection.servicer import DetectionServicer
from twinray.services.normal_synthesis.servicer import NormalSynthesisServicer
from twinray.services.segmentation.servicer import SegmentationServicer
from twinray.shared.data.phantoms.dataset import read_phantom_split, write_phantom_dataset
from twinray.shared.data.phantoms.pathologies import PATHOLOGIES
from twinray.shared.data.twin_residuals import read_twin_residuals
from twinray.shared.models.components.twin import to_input_size
from twinray.shared.models.detection.network import DetectorConfig, LesionDetector, detect, detector_inputs
from twinray.shared.models.matching_pairs.network import ResidualTranslator, TranslatorConfig
from twinray.shared.models.normal_synthesis.network import AnatomyConditionedGenerator, SpadeConfig
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import FailedPrecondition, InvalidInput, NotFound
from twinray.shared.platform.imaging import decode_png, encode_float01_png16, encode_png_u16
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import open_store
from twinray.shared.synthesis.twin_residuals import write_twin_residuals
from twinray.v1 import common_pb2, detection_pb2, normal_synthesis_pb2, segmentation_pb2

SIZE = 64  # the phantoms' and the detector's input size
TINY = DetectorConfig(input_size=SIZE, fpn_channels=16, attention_hidden=4, score_threshold=0.0, detections_per_image=6)
MIN_SCORE = 0.1  # the val threshold published with the tiny detectors


def _publish(registry: ModelRegistry, name: str, state: dict, config: dict, training: dict | None = None, metrics=None) -> int:
    weights = io.BytesIO()
    torch.save(state, weights)
    return registry.publish(
        name, weights=weights.getvalue(), config=config, metrics=metrics or {}, training=training or {}, card="test"
    ).version


class Services:
    """Segmentation 1, normal-synthesis 1 (trained with it), matching-pairs 1, a phantom dataset and
    both twins' stored residuals; the in-process NormalSynthesis (on in-process Segmentation) and
    Segmentation services, recording their requests; detectors are published per test."""

    def __init__(self, settings: Settings) -> None:
        self.store = open_store(settings)
        self.registry = ModelRegistry(self.store)
        torch.manual_seed(0)
        segmenter = AnatomySegmenter(SegmenterConfig(input_size=SIZE, channels=(4, 8)))
        seg = _publish(self.registry, "segmentation", segmenter.state_dict(), segmenter.config.to_dict())
        generator = AnatomyConditionedGenerator(SpadeConfig(input_size=32, channels=(4, 8), n_blocks=1, hidden=4))
        torch.nn.init.normal_(generator.head.conv.weight, std=0.5)  # a fresh head changes nothing: make it change
        _publish(
            self.registry, "normal-synthesis", generator.state_dict(), {**generator.config.to_dict(), "segmentation_version": seg}
        )
        translator = ResidualTranslator(TranslatorConfig(input_size=32, channels=4, n_res_blocks=1))
        torch.nn.init.normal_(translator.head.conv.weight, std=0.5)
        state = {"abnormal_to_normal": translator.state_dict(), "normal_to_abnormal": translator.state_dict()}
        _publish(self.registry, "matching-pairs", state, translator.config.to_dict())
        write_phantom_dataset(self.store, "phantoms", size=SIZE, splits={"test": 3}, seed=5, progress=False)
        self.phantoms = read_phantom_split(self.store, "phantoms", "test")
        self.residuals = {
            twin: write_twin_residuals(self.store, model=twin, dataset="phantoms", progress=False)
            for twin in ("normal-synthesis", "matching-pairs")
        }
        self.segmentation = SegmentationServicer(settings)
        self.normal_synthesis = NormalSynthesisServicer(settings)
        self.settings = settings
        self.servicer = DetectionServicer(settings)
        self.requests: list = []

    def publish_detector(self, variant: str, *, twin: str = "normal-synthesis", training: dict | None = None) -> int:
        """A tiny untrained detector with the training.json `twinray train detection` writes (or `training`)."""
        torch.manual_seed(1)
        detector = LesionDetector(dataclasses.replace(TINY, variant=variant))
        for layer in detector.head.classification_head.modules():  # a fresh head scores every anchor 0.01: spread them
            if isinstance(layer, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(layer.weight)
        if training is None:
            manifest = self.residuals[twin]
            training = {
                "twin_residuals": {"name": manifest["name"], "model": manifest["model"]},
                "segmentation": {"name": "segmentation", "version": 1},
            }
        metrics = {"val_score_threshold": MIN_SCORE}
        return _publish(self.registry, "detection", detector.state_dict(), detector.config.to_dict(), training, metrics)

    async def segment(self, request: segmentation_pb2.SegmentRequest) -> segmentation_pb2.SegmentResponse:
        self.requests.append(request)
        return self.segmentation.segment(request)

    async def synthesize(self, request: normal_synthesis_pb2.SynthesizeRequest) -> normal_synthesis_pb2.SynthesizeResponse:
        self.requests.append(request)
        return await self.normal_synthesis.synthesize(request, (), self.segment)

    def detect(self, **fields) -> detection_pb2.DetectResponse:
        fields.setdefault("image", common_pb2.Image(png=self.png(0)))
        request = detection_pb2.DetectRequest(**fields)
        return asyncio.run(self.servicer.detect(request, (), synthesize=self.synthesize, segment=self.segment))

    def png(self, row: int) -> bytes:
        return encode_png_u16(self.phantoms.image[row])


@pytest.fixture(scope="module")
def services(tmp_path_factory) -> Services:
    return Services(Settings.from_env({"TWINRAY_HOME": str(tmp_path_factory.mktemp("home"))}))


@pytest.fixture
def published(services):
    """Each test publishes the detectors it needs (the newest versions) to a fresh Detection servicer
    pinned to "latest", resolved on its first request."""
    services.servicer = DetectionServicer(services.settings)
    return services.publish_detector


def _residual(response: detection_pb2.DetectResponse) -> np.ndarray:
    return np.frombuffer(response.residual.data, "<f4").reshape(tuple(response.residual.shape))


def _models(response: detection_pb2.DetectResponse) -> list[tuple[str, str]]:
    return [(m.name, m.version) for m in response.provenance.models]


@pytest.mark.parametrize("twin", ["normal-synthesis", "matching-pairs"])
def test_the_residual_is_the_one_the_training_residuals_hold(services, published, twin):
    version = published("attention", twin=twin)
    stored = read_twin_residuals(services.store, services.residuals[twin]["name"], "test")
    for row in range(len(stored)):
        response = services.detect(image=common_pb2.Image(png=services.png(row)), include_residual=True, include_twin=True)
        residual = _residual(response)
        assert residual.shape == (SIZE, SIZE) and response.residual.dtype == common_pb2.DTYPE_FLOAT32
        np.testing.assert_allclose(residual, stored[row], rtol=0, atol=3e-4)  # stored as float16
        assert np.abs(residual).max() > 1e-2  # the tiny twins do change the image
        image = services.phantoms.image[row] / 65535
        np.testing.assert_allclose(decode_png(response.twin_png).pixels, image - residual, atol=0.5 / 65535 + 1e-6)
    expected = [("detection", str(version)), (twin, "1")] + ([("segmentation", "1")] if twin == "normal-synthesis" else [])
    assert _models(response) == expected
    assert len(response.provenance.trace_id) in (0, 32)


def test_the_twin_is_asked_of_the_exact_versions_with_the_detectors_input_pixels(services, published):
    published("concat")
    services.requests.clear()
    services.detect(image=common_pb2.Image(png=encode_float01_png16(np.full((100, 90), 0.3, np.float32))))
    synthesize, segment = services.requests
    assert (synthesize.model.name, synthesize.model.version, synthesize.segmentation_model.version) == (
        "normal-synthesis",
        "1",
        "1",
    )
    # decoded once: the S x S float32 pixels the detector reads, as a tensor
    assert list(synthesize.image.tensor.shape) == [SIZE, SIZE] and synthesize.image.tensor.dtype == common_pb2.DTYPE_FLOAT32
    assert segment.image == synthesize.image


def test_boxes_are_the_detectors_own_stretched_back_to_the_input_grid_with_mm(services, published):
    version = published("concat")
    height, width = 90, 120
    image = np.clip(services.phantoms.image[1] / 65535, 0, 1).astype(np.float32)
    pixels = torch.nn.functional.interpolate(torch.from_numpy(image)[None, None], size=(height, width), mode="bilinear")
    png = encode_float01_png16(pixels[0, 0].numpy())
    spacing = common_pb2.PixelSpacing(row_mm=0.5, col_mm=0.25)
    response = services.detect(image=common_pb2.Image(png=png, spacing=spacing), include_residual=True, min_score=0.0)

    assert (response.height, response.width, response.min_score) == (height, width, 0.0)
    assert (response.spacing.row_mm, response.spacing.col_mm) == (0.5, 0.25)
    loaded = services.registry.load("detection", version)
    model = LesionDetector(DetectorConfig.from_dict(loaded.config))
    model.load_state_dict(torch.load(io.BytesIO(loaded.weights), weights_only=True))
    decoded = torch.from_numpy(decode_png(png).pixels)[None, None]
    inputs = detector_inputs(model.config, to_input_size(decoded, SIZE), torch.from_numpy(_residual(response).copy())[None, None])
    expected = detect(model, inputs, torch.device("cpu"))[0]
    assert len(response.lesions) == len(expected["scores"]) == TINY.detections_per_image
    scale = np.array([width, height, width, height]) / SIZE
    for lesion, box, score, label in zip(response.lesions, expected["boxes"], expected["scores"], expected["labels"]):
        got = [lesion.box.x_min, lesion.box.y_min, lesion.box.x_max, lesion.box.y_max]
        np.testing.assert_allclose(got, np.clip(box.numpy() * scale, 0, [width, height, width, height]), rtol=1e-5, atol=1e-3)
        assert lesion.box.score == pytest.approx(float(score), rel=1e-5)
        assert (lesion.class_index, lesion.box.label) == (int(label), PATHOLOGIES[int(label)])
        assert lesion.spacing_known
        mm = [lesion.x_min_mm, lesion.y_min_mm, lesion.x_max_mm, lesion.y_max_mm]
        np.testing.assert_allclose(mm, np.array(got) * [0.25, 0.5, 0.25, 0.5], rtol=1e-6)
    scores = [lesion.box.score for lesion in response.lesions]
    assert scores == sorted(scores, reverse=True)


def test_min_score_defaults_to_the_threshold_chosen_on_val_and_filters(services, published):
    published("concat")
    default = services.detect()
    assert default.min_score == pytest.approx(MIN_SCORE) and not default.lesions[0].spacing_known
    every = services.detect(min_score=0.0)
    cut = sorted(lesion.box.score for lesion in every.lesions)[2]
    kept = services.detect(min_score=cut)
    assert [lesion.box.score for lesion in kept.lesions] == [s.box.score for s in every.lesions if s.box.score >= cut]
    assert not services.detect(min_score=1.0).lesions


def test_the_anatomy_detector_asks_segmentation_for_the_version_it_was_trained_with(services, published):
    version = published("anatomy")
    services.requests.clear()
    response = services.detect(min_score=0.0)
    (segment,) = services.requests
    assert isinstance(segment, segmentation_pb2.SegmentRequest) and segment.model.version == "1"
    assert _models(response) == [("detection", str(version)), ("segmentation", "1")] and response.lesions


def test_the_baseline_reads_the_image_only_and_has_no_twin_to_return(services, published):
    version = published("baseline")
    services.requests.clear()
    assert _models(services.detect(min_score=0.0)) == [("detection", str(version))] and not services.requests
    with pytest.raises(FailedPrecondition, match=f"detection version {version} \\(baseline\\) reads no twin"):
        services.detect(include_twin=True)


def test_run_detector_batches_any_versions_into_one_forward_each(services, published):
    first, second = published("baseline"), published("baseline")
    servicer = services.servicer
    torch.manual_seed(3)
    images = [torch.rand(1, SIZE, SIZE) for _ in range(4)]
    batch = [(first, images[0]), (second, images[1]), (first, images[2]), (second, images[3])]
    together = servicer.run_detector(batch)
    for (version, image), found in zip(batch, together):
        alone = servicer.run_detector([(version, image)])[0]
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(found[key], alone[key], rtol=1e-4, atol=1e-4)


BAD = {
    "empty image": (dict(image=common_pb2.Image()), InvalidInput, "image is empty"),
    "undecodable bytes": (dict(image=common_pb2.Image(png=b"not a png")), InvalidInput, "not a PNG"),
    "min_score above 1": (dict(min_score=1.5), InvalidInput, "min_score must be in [0, 1], got 1.5"),
    "negative min_score": (dict(min_score=-0.1), InvalidInput, "min_score must be in [0, 1], got -0.1"),
    "NaN min_score": (dict(min_score=float("nan")), InvalidInput, "min_score must be in [0, 1], got nan"),
    "unknown version": (dict(model=common_pb2.ModelRef(version="99")), NotFound, "model 'detection' has no version 99"),
    "another model's name": (dict(model=common_pb2.ModelRef(name="segmentation")), InvalidInput, "not 'segmentation'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_raise_precise_errors(services, published, case):
    published("concat")
    fields, error, message = BAD[case]
    with pytest.raises(error) as info:
        services.detect(**fields)
    assert message in str(info.value)


def test_no_published_detector_is_a_failed_precondition_naming_the_training_command(tmp_path):
    servicer = DetectionServicer(Settings.from_env({"TWINRAY_HOME": str(tmp_path)}))
    request = detection_pb2.DetectRequest(image=common_pb2.Image(png=encode_float01_png16(np.zeros((32, 32), np.float32))))
    with pytest.raises(FailedPrecondition, match="`twinray train detection"):
        asyncio.run(servicer.detect(request, (), synthesize=None, segment=None))


TWIN_GONE = {
    "nothing recorded": (lambda model: {}, "records no twin model in its training.json"),
    "other weights": (
        lambda model: {**model, "weights_sha256": "0" * 64},
        "normal-synthesis version 1, which now holds other weights",
    ),
    "unpublished": (lambda model: {**model, "version": 9}, "normal-synthesis version 9, which is no longer published"),
}


@pytest.mark.parametrize("case", list(TWIN_GONE))
def test_a_detector_whose_twin_cannot_be_served_again_is_a_failed_precondition(services, published, case):
    recorded, message = TWIN_GONE[case]
    model = recorded(services.residuals["normal-synthesis"]["model"])
    version = published("attention", training={"twin_residuals": {"name": "r", "model": model}} if model else {})
    with pytest.raises(FailedPrecondition, match=message):
        services.detect(model=common_pb2.ModelRef(version=str(version)))

"""The Synthesize logic in-process, composed with an in-process SegmentationServicer: the answer,
which segmenter labels the anatomy, and every error a caller can cause (no Ray)."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
import torch
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from twinray.services.normal_synthesis.servicer import NormalSynthesisServicer
from twinray.services.segmentation.servicer import SegmentationServicer
from twinray.shared.data.anatomy import NUM_ANATOMY_CLASSES
from twinray.shared.data.phantoms.cxr import render_phantom
from twinray.shared.models.normal_synthesis.network import AnatomyConditionedGenerator, SpadeConfig
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import InvalidInput, NotFound, Unavailable
from twinray.shared.platform.imaging import decode_label_png, decode_png, encode_float01_png16, encode_label_png
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import open_store
from twinray.shared.platform.telemetry import configure_tracing
from twinray.v1 import common_pb2, normal_synthesis_pb2, segmentation_pb2


def _publish(registry: ModelRegistry, name: str, module: torch.nn.Module, config: dict) -> int:
    weights = io.BytesIO()
    torch.save(module.state_dict(), weights)
    return registry.publish(name, weights=weights.getvalue(), config=config, metrics={}, training={}, card="test").version


def _generator(seed: int) -> AnatomyConditionedGenerator:
    """Untrained, but with a head that darkens by an image-dependent amount (a fresh head changes nothing)."""
    torch.manual_seed(seed)
    generator = AnatomyConditionedGenerator(SpadeConfig(input_size=32, channels=(4, 8), n_blocks=1, hidden=4))
    torch.nn.init.normal_(generator.head.conv.weight, std=0.5)
    torch.nn.init.constant_(generator.head.conv.bias, -1.0)
    return generator


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    configure_tracing(Settings.from_env({}), "test", processor=SimpleSpanProcessor(exporter))
    return exporter


class Services:
    """Segmentation versions 1 and 2 (served pinned to the latest, 2), normal-synthesis 1 trained
    with segmentation 1. `segment` is the in-process Segmentation service; it records every request."""

    def __init__(self, settings: Settings) -> None:
        registry = ModelRegistry(open_store(settings))
        seg_config = SegmenterConfig(input_size=32, channels=(4, 8))
        for seed in (1, 2):
            torch.manual_seed(seed)
            _publish(registry, "segmentation", AnatomySegmenter(seg_config), seg_config.to_dict())
        generator = _generator(0)
        self.version = _publish(
            registry, "normal-synthesis", generator, {**generator.config.to_dict(), "segmentation_version": 1}
        )
        self.segmentation = SegmentationServicer(settings, model_version="latest")
        self.servicer = NormalSynthesisServicer(settings)
        self.segment_requests: list[segmentation_pb2.SegmentRequest] = []

    async def segment(self, request: segmentation_pb2.SegmentRequest) -> segmentation_pb2.SegmentResponse:
        self.segment_requests.append(request)
        return self.segmentation.segment(request)

    def synthesize(
        self, request: normal_synthesis_pb2.SynthesizeRequest, segment=None
    ) -> normal_synthesis_pb2.SynthesizeResponse:
        return asyncio.run(self.servicer.synthesize(request, (), segment or self.segment))


@pytest.fixture
def services(tmp_path) -> Services:
    return Services(Settings.from_env({"TWINRAY_HOME": str(tmp_path)}))


def _phantom(size: int):
    return render_phantom(4242, size, lesion_seed=7)


def _request(phantom, **fields) -> normal_synthesis_pb2.SynthesizeRequest:
    return normal_synthesis_pb2.SynthesizeRequest(image=common_pb2.Image(png=encode_float01_png16(phantom.image)), **fields)


def _models(response: normal_synthesis_pb2.SynthesizeResponse) -> list[tuple[str, str]]:
    return [(m.name, m.version) for m in response.provenance.models]


@pytest.mark.parametrize("size", [256, 64])
def test_round_trip_twin_residual_anatomy_and_provenance(services, exporter, size):
    exporter.clear()
    phantom = _phantom(size)
    response = services.synthesize(_request(phantom))

    twin = decode_png(response.twin_png).pixels
    assert twin.shape == (size, size)
    assert list(response.residual.shape) == [size, size] and response.residual.dtype == common_pb2.DTYPE_FLOAT32
    residual = np.frombuffer(response.residual.data, "<f4").reshape(size, size)
    image = decode_png(encode_float01_png16(phantom.image)).pixels  # what the service decoded
    # residual = input - twin; the twin PNG is the float twin rounded to 16 bits
    np.testing.assert_allclose(residual, image - twin, rtol=0, atol=0.5 / 65535 + 1e-6)
    assert residual.min() < -1e-2 and residual.max() > 1e-2  # the twin may add density back as well as remove it
    labels = decode_label_png(response.anatomy.png)
    assert labels.shape == (size, size) == (response.anatomy.height, response.anatomy.width)
    assert labels.max() < NUM_ANATOMY_CLASSES
    assert _models(response) == [("normal-synthesis", "1"), ("segmentation", "1")]
    rpc = next(s for s in exporter.get_finished_spans() if s.name == "twinray.v1.NormalSynthesis/Synthesize")
    assert response.provenance.trace_id == format(rpc.context.trace_id, "032x")


def test_segments_with_the_version_the_model_was_trained_with_unless_the_request_overrides(services):
    phantom = _phantom(64)
    assert services.segmentation.models.pinned() == 2  # the deployed segmenter is not the trained-with one
    response = services.synthesize(_request(phantom))
    assert services.segment_requests[-1].model.version == "1"
    assert ("segmentation", "1") in _models(response)
    seg_v1 = services.segmentation.segment(
        segmentation_pb2.SegmentRequest(image=_request(phantom).image, model=common_pb2.ModelRef(version="1"))
    )
    assert response.anatomy.png == seg_v1.label_map.png

    override = services.synthesize(_request(phantom, segmentation_model=common_pb2.ModelRef(version="2")))
    assert services.segment_requests[-1].model.version == "2"
    assert _models(override) == [("normal-synthesis", "1"), ("segmentation", "2")]


def test_model_is_resolved_before_anything_is_segmented(services):
    with pytest.raises(NotFound, match="model 'normal-synthesis' has no version 77"):
        services.synthesize(_request(_phantom(64), model=common_pb2.ModelRef(version="77")))
    assert services.segment_requests == []


def test_a_callers_anatomy_map_is_used_and_nothing_is_segmented(services):
    phantom = _phantom(64)
    anatomy = encode_label_png(phantom.anatomy)
    response = services.synthesize(_request(phantom, anatomy=common_pb2.LabelMap(png=anatomy)))
    assert services.segment_requests == []
    assert _models(response) == [("normal-synthesis", "1")]
    np.testing.assert_array_equal(decode_label_png(response.anatomy.png), phantom.anatomy)
    # the map conditions the twin: another map, another twin
    other = services.synthesize(
        _request(phantom, anatomy=common_pb2.LabelMap(png=encode_label_png(np.zeros((64, 64), np.uint8))))
    )
    assert other.twin_png != response.twin_png


BAD = {
    "garbage bytes": (
        lambda p: normal_synthesis_pb2.SynthesizeRequest(image=common_pb2.Image(png=b"not an image at all")),
        InvalidInput,
        "not a PNG file (the 8-byte PNG signature is missing)",
    ),
    "anatomy map of another size": (
        lambda p: _request(p, anatomy=common_pb2.LabelMap(png=encode_label_png(np.zeros((32, 48), np.uint8)))),
        InvalidInput,
        "anatomy map is 48x32 but the image is 64x64",
    ),
    "label outside the anatomy classes": (
        lambda p: _request(p, anatomy=common_pb2.LabelMap(png=encode_label_png(np.full((64, 64), 200, np.uint8)))),
        InvalidInput,
        f"anatomy map has label 200; the anatomy classes are 0..{NUM_ANATOMY_CLASSES - 1}",
    ),
    "unknown segmentation version": (
        lambda p: _request(p, segmentation_model=common_pb2.ModelRef(version="88")),
        NotFound,
        "model 'segmentation' has no version 88",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_a_precise_error(services, case):
    build, error, message = BAD[case]
    with pytest.raises(error) as info:
        services.synthesize(build(_phantom(64)))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_unreachable_segmentation_is_unavailable(services):
    async def down(request: segmentation_pb2.SegmentRequest) -> segmentation_pb2.SegmentResponse:
        raise Unavailable("segmentation service 'segmentation' is unavailable: RayServeException")

    with pytest.raises(Unavailable, match="segmentation service 'segmentation' is unavailable"):
        services.synthesize(_request(_phantom(64)), segment=down)

"""The Segment logic in-process: spans (in-memory exporter), areas and model-version handling."""

from __future__ import annotations

import io

import pytest
import torch
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from twinray.services.segmentation.servicer import SegmentationServicer
from twinray.shared.data.phantoms.cxr import render_phantom
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import InvalidInput, NotFound
from twinray.shared.platform.imaging import encode_float01_png16
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import open_store
from twinray.shared.platform.telemetry import configure_tracing
from twinray.v1 import common_pb2, segmentation_pb2


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    configure_tracing(Settings.from_env({}), "test", processor=SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def servicer(tmp_path) -> SegmentationServicer:
    settings = Settings.from_env({"TWINRAY_HOME": str(tmp_path)})
    config = SegmenterConfig(input_size=32, channels=(4, 8))
    registry = ModelRegistry(open_store(settings))
    for _ in range(2):  # versions 1 and 2
        weights = io.BytesIO()
        torch.save(AnatomySegmenter(config).state_dict(), weights)
        registry.publish(
            "segmentation", weights=weights.getvalue(), config=config.to_dict(), metrics={}, training={}, card="test"
        )
    return SegmentationServicer(settings, model_version="1")


def _request(**model) -> segmentation_pb2.SegmentRequest:
    image = common_pb2.Image(png=encode_float01_png16(render_phantom(3, 80).image))
    return segmentation_pb2.SegmentRequest(image=image, model=common_pb2.ModelRef(**model))


def test_rpc_and_model_spans_carry_model_and_image_attributes(servicer, exporter):
    exporter.clear()
    response = servicer.segment(_request())
    spans = {span.name: span for span in exporter.get_finished_spans()}
    rpc, model = spans["twinray.v1.Segmentation/Segment"], spans["model segmentation"]
    assert model.parent.span_id == rpc.context.span_id
    assert model.attributes["twinray.model.version"] == "1"
    assert (model.attributes["twinray.image.height"], model.attributes["twinray.batch_size"]) == (80, 1)
    assert rpc.attributes["twinray.image.width"] == 80
    assert response.provenance.trace_id == format(rpc.context.trace_id, "032x")


def test_pinned_version_answers_unless_the_request_names_another(servicer):
    assert servicer.segment(_request()).provenance.models[0].version == "1"
    assert servicer.segment(_request(version="2")).provenance.models[0].version == "2"
    assert servicer.segment(_request(version="latest")).provenance.models[0].version == "2"
    servicer.models.repin("2")
    assert servicer.segment(_request()).provenance.models[0].version == "2"


def test_unknown_version_or_model_name(servicer):
    with pytest.raises(NotFound, match="no version 9"):
        servicer.segment(_request(version="9"))
    with pytest.raises(InvalidInput, match="serves model 'segmentation'"):
        servicer.segment(_request(name="detection"))


def test_areas_without_spacing_are_marked_unknown(servicer):
    response = servicer.segment(_request())
    assert sum(a.pixels for a in response.areas) == 80 * 80
    assert not any(a.spacing_known for a in response.areas) and response.spacing.row_mm == 0

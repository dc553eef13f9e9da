import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from twinray.shared.platform.config import Settings
from twinray.shared.platform.telemetry import (
    configure_tracing,
    context_from_metadata,
    current_trace_id,
    metadata_for_current_span,
    model_span,
    tracer,
)


@pytest.fixture(scope="module")
def exporter():
    exporter = InMemorySpanExporter()
    configure_tracing(Settings.from_env({}), "test", processor=SimpleSpanProcessor(exporter))
    return exporter


def test_model_span_records_model_and_image_attributes(exporter):
    exporter.clear()
    with model_span("segmentation", 3, height=256, width=200, batch_size=1):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.attributes["twinray.model.name"] == "segmentation"
    assert span.attributes["twinray.model.version"] == "3"
    assert (span.attributes["twinray.image.height"], span.attributes["twinray.image.width"]) == (256, 200)
    assert span.attributes["twinray.batch_size"] == 1


def test_trace_context_survives_a_metadata_round_trip(exporter):
    exporter.clear()
    with tracer().start_as_current_span("client"):
        sent_trace = current_trace_id()
        metadata = [("application", "segmentation"), *metadata_for_current_span()]
    with tracer().start_as_current_span("server", context=context_from_metadata(metadata), kind=trace.SpanKind.SERVER):
        assert current_trace_id() == sent_trace
    server = [s for s in exporter.get_finished_spans() if s.name == "server"][0]
    assert server.parent is not None and format(server.context.trace_id, "032x") == sent_trace


def test_no_trace_without_a_span():
    assert current_trace_id() == ""

"""OpenTelemetry set-up shared by services, training and clients.

The exporter is chosen by configuration (`TWINRAY_OTEL_EXPORTER`: none | console | otlp), trace
context travels in gRPC metadata as W3C `traceparent`/`tracestate`, and spans carry the model name,
version, image size and batch size so a slow call can be pinned on a model. Never patient data or
credentials: spans name models and sizes only, and `configure_tracing` mutes pydicom, whose warnings
and log lines quote the header values (names, IDs, dates) of malformed files.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Iterable, Iterator

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from twinray.shared.platform.config import Settings

_PROPAGATOR = TraceContextTextMapPropagator()
_lock = threading.Lock()
_provider: TracerProvider | None = None


def configure_tracing(settings: Settings, service_name: str, *, processor: SpanProcessor | None = None) -> TracerProvider:
    """Install the process-wide tracer provider once; `processor` overrides the configured exporter (tests)."""
    global _provider
    keep_patient_data_out_of_logs()
    with _lock:
        if _provider is not None:
            if processor is not None:
                _provider.add_span_processor(processor)
            return _provider
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        if processor is not None:
            provider.add_span_processor(processor)
        elif settings.otel_exporter == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        elif settings.otel_exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_endpoint)))
        trace.set_tracer_provider(provider)
        _provider = provider
        return provider


def keep_patient_data_out_of_logs() -> None:
    """Silence pydicom in this process: on a malformed file its warnings and log lines quote raw header
    values (a patient's name, ID or birth date). A service's verdict on such a file is the InvalidInput
    it returns; the rest would reach the replica logs. Idempotent."""
    logging.getLogger("pydicom").propagate = False  # its own NullHandler keeps it quiet; children stop here too
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")


def tracer() -> trace.Tracer:
    return trace.get_tracer("twinray")


def context_from_metadata(metadata: Iterable[tuple[str, str]]) -> otel_context.Context:
    """The caller's trace context, from incoming gRPC metadata (keys are lower-case in gRPC)."""
    carrier = {key.lower(): value for key, value in metadata if isinstance(value, str)}
    return _PROPAGATOR.extract(carrier)


@contextlib.contextmanager
def server_span(method: str, metadata: Iterable[tuple[str, str]]) -> Iterator[trace.Span]:
    """The span of one served RPC (`method` as "twinray.v1.Service/Method"), child of the caller's
    trace context carried in the gRPC `metadata`."""
    with tracer().start_as_current_span(method, context=context_from_metadata(metadata), kind=trace.SpanKind.SERVER) as span:
        yield span


def metadata_for_current_span() -> list[tuple[str, str]]:
    """`traceparent` (and `tracestate`) of the current span, to send as gRPC metadata."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return list(carrier.items())


def current_trace_id() -> str:
    """32 hex digits of the current trace, or "" outside a recorded span."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else ""


@contextlib.contextmanager
def model_span(name: str, version: int | str, *, height: int, width: int, batch_size: int) -> Iterator[trace.Span]:
    """A span around one model call, with the attributes operators filter on."""
    with tracer().start_as_current_span(
        f"model {name}",
        attributes={
            "twinray.model.name": name,
            "twinray.model.version": str(version),
            "twinray.image.height": height,
            "twinray.image.width": width,
            "twinray.batch_size": batch_size,
        },
    ) as span:
        yield span

"""InternalCall carries the caller's trace to another deployment; remote_cause unwraps Ray's real
RayTaskError so the callee's own error (and its one-line message) reaches the client."""

from __future__ import annotations

import dataclasses

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from ray.exceptions import RayTaskError

from twinray.services.common.internal_call import InternalCall, remote_cause
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import NotFound, TwinRayError
from twinray.shared.platform.telemetry import configure_tracing, context_from_metadata, tracer


@pytest.fixture(scope="module", autouse=True)
def recorded_spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    configure_tracing(Settings.from_env({}), "test", processor=SimpleSpanProcessor(exporter))
    return exporter


def test_from_current_span_carries_the_callers_trace_context() -> None:
    with tracer().start_as_current_span("caller") as span:
        call = InternalCall.from_current_span()
    (key, value), *_ = call.invocation_metadata()
    assert key == "traceparent"
    assert value.startswith(f"00-{span.get_span_context().trace_id:032x}-{span.get_span_context().span_id:016x}-")
    # The callee's server_span reads it back as its parent.
    parent = context_from_metadata(call.invocation_metadata())
    with tracer().start_as_current_span("callee", context=parent) as child:
        assert child.parent.span_id == span.get_span_context().span_id


def test_outside_a_span_there_is_nothing_to_carry() -> None:
    assert InternalCall.from_current_span().invocation_metadata() == []


def test_an_internal_call_is_immutable_and_hands_out_copies() -> None:
    call = InternalCall(metadata=(("traceparent", "x"),))
    call.invocation_metadata().append(("extra", "y"))
    assert call.invocation_metadata() == [("traceparent", "x")]
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.metadata = ()  # type: ignore[misc]


def test_remote_cause_unwraps_rays_task_error() -> None:
    error = NotFound("model 'segmentation' has no version 9")
    wrapped = RayTaskError("Segment", "Traceback (most recent call last):\n  ...", error).as_instanceof_cause()
    assert isinstance(wrapped, TwinRayError)  # how normal_synthesis' `except TwinRayError` catches it
    assert str(wrapped) != str(error)  # Ray's text (process, address, traceback), not for a client
    cause = remote_cause(wrapped)
    assert cause is error and str(cause) == "model 'segmentation' has no version 9"


def test_remote_cause_of_anything_else_is_the_error_itself() -> None:
    plain = NotFound("x")
    assert remote_cause(plain) is plain

    class WithCauseText(Exception):
        cause = "not an exception"

    odd = WithCauseText()
    assert remote_cause(odd) is odd

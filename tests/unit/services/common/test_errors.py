"""The real grpc_method / grpc_stream_method decorators: each TwinRay error becomes its gRPC status
with a one-line message, anything else INTERNAL without a traceback, and an InternalCall gets the
error itself."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator

import grpc
import pytest

from twinray.services.common.errors import grpc_method, grpc_stream_method, status_code
from twinray.services.common.internal_call import InternalCall
from twinray.shared.platform.errors import (
    FailedPrecondition,
    IntegrityError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TwinRayError,
    Unavailable,
)
from twinray.v1 import common_pb2

STATUSES = [
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (IntegrityError, grpc.StatusCode.DATA_LOSS),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (TwinRayError, grpc.StatusCode.INTERNAL),
]
GENERIC = "internal error in {}; the server log has the details"


class FakeServicerContext:
    """The part of grpc.aio.ServicerContext (and Serve's gRPC context) the decorators use."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details: str | None = None

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details


class Service:
    """A Serve-style deployment: methods take (request, grpc_context); each raises what it is given."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    @grpc_method(common_pb2.Provenance)
    async def Describe(self, request: common_pb2.ModelRef, grpc_context: object) -> common_pb2.Provenance:
        if self.error is not None:
            raise self.error
        return common_pb2.Provenance(trace_id=f"answer for {request.name}")

    @grpc_stream_method
    async def Stream(self, request: common_pb2.ModelRef, grpc_context: object) -> AsyncIterator[common_pb2.Provenance]:
        for i in range(2):
            yield common_pb2.Provenance(trace_id=f"{request.name} {i}")
        if self.error is not None:
            raise self.error
        yield common_pb2.Provenance(trace_id=f"{request.name} last")


def unary(service: Service, context: object) -> common_pb2.Provenance:
    return asyncio.run(service.Describe(common_pb2.ModelRef(name="m"), context))


def stream(service: Service, context: object) -> tuple[list[str], BaseException | None]:
    """The messages a client receives before the stream ends, and the exception it ends with."""

    async def consume() -> tuple[list[str], BaseException | None]:
        received: list[str] = []
        try:
            async for message in service.Stream(common_pb2.ModelRef(name="m"), context):
                received.append(message.trace_id)
        except Exception as error:  # noqa: BLE001 - what the stream ended with is the result
            return received, error
        return received, None

    return asyncio.run(consume())


def test_the_decorators_keep_the_method_names_serve_routes_by() -> None:
    assert Service.Describe.__name__ == "Describe" and Service.Stream.__name__ == "Stream"
    assert inspect.iscoroutinefunction(Service.Describe) and inspect.isasyncgenfunction(Service.Stream)


def test_a_successful_call_sets_no_status() -> None:
    context = FakeServicerContext()
    assert unary(Service(), context).trace_id == "answer for m"
    assert stream(Service(), context) == (["m 0", "m 1", "m last"], None)
    assert (context.code, context.details) == (None, None)


@pytest.mark.parametrize(("error_type", "code"), STATUSES)
def test_unary_twinray_error_becomes_its_status_and_an_empty_response(error_type: type[TwinRayError], code) -> None:
    context = FakeServicerContext()
    response = unary(Service(error_type("model 'x'\n   has no version 9")), context)
    assert response == common_pb2.Provenance()  # the empty response type the decorator names
    assert context.code == code
    assert context.details == "model 'x' has no version 9"  # one line, as the error carries it


@pytest.mark.parametrize(("error_type", "code"), STATUSES)
def test_stream_twinray_error_sets_its_status_and_ends_the_stream(error_type: type[TwinRayError], code) -> None:
    context, error = FakeServicerContext(), error_type("no more\nmasks")
    received, ended_with = stream(Service(error), context)
    assert received == ["m 0", "m 1"]  # what was sent before the error still reached the client
    assert ended_with is error  # Serve needs an exception to send a stream's status
    assert (context.code, context.details) == (code, "no more masks")


def test_status_code_of_an_unknown_code_name_is_internal() -> None:
    class Odd(TwinRayError):
        code = "NOT_A_GRPC_STATUS"

    assert status_code(Odd("x")) == grpc.StatusCode.INTERNAL
    assert status_code(NotFound("x")) == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("call", ["unary", "stream"])
def test_unexpected_error_is_internal_with_a_generic_message_and_a_logged_traceback(
    call: str, caplog: pytest.LogCaptureFixture
) -> None:
    context, error = FakeServicerContext(), KeyError("/secret/path/weights.pt")
    with caplog.at_level(logging.ERROR, logger="twinray.services"):
        if call == "unary":
            assert unary(Service(error), context) == common_pb2.Provenance()
            method = "Describe"
        else:
            assert stream(Service(error), context) == (["m 0", "m 1"], error)
            method = "Stream"
    assert context.code == grpc.StatusCode.INTERNAL
    assert context.details == GENERIC.format(method)
    assert "secret" not in context.details and "Traceback" not in context.details
    (record,) = caplog.records
    assert record.getMessage() == f"unhandled error in {method}" and record.exc_info[1] is error


@pytest.mark.parametrize("error_type", [error_type for error_type, _ in STATUSES])
def test_an_internal_call_gets_the_twinray_error_itself(error_type: type[TwinRayError]) -> None:
    """Another deployment called through a handle: no status to set, the caller handles the error."""
    call, error = InternalCall(metadata=()), error_type("bad image")
    with pytest.raises(error_type) as raised:
        unary(Service(error), call)
    assert raised.value is error
    received, ended_with = stream(Service(error), call)
    assert received == ["m 0", "m 1"] and ended_with is error


def test_an_internal_call_gets_an_unexpected_error_itself() -> None:
    error = KeyError("boom")
    with pytest.raises(KeyError) as raised:
        unary(Service(error), InternalCall(metadata=()))
    assert raised.value is error

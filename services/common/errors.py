"""Turn TwinRay errors into gRPC statuses; never let a traceback reach a client."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from twinray.services.common.internal_call import InternalCall
from twinray.shared.platform.errors import TwinRayError

log = logging.getLogger("twinray.services")
Response = TypeVar("Response")


def status_code(error: TwinRayError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, error.code, grpc.StatusCode.INTERNAL)


def grpc_method(
    empty_response: Callable[[], Response],
) -> Callable[[Callable[..., Awaitable[Response]]], Callable[..., Awaitable[Response]]]:
    """Decorate a Serve gRPC method `(self, request, grpc_context)`: known errors become their status
    with a one-line message, anything else INTERNAL with a generic message (traceback to the logs)."""

    def decorate(method: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
        @functools.wraps(method)
        async def wrapper(self: Any, request: Any, grpc_context: Any) -> Response:
            try:
                return await method(self, request, grpc_context)
            except Exception as error:  # noqa: BLE001 - the last line of defence before the client
                set_status(error, grpc_context, method.__name__)
            return empty_response()

        return wrapper

    return decorate


def set_status(error: Exception, grpc_context: Any, method_name: str) -> None:
    """Put the status of `error` on the gRPC context: a TwinRayError's own code and message, anything
    else INTERNAL with a generic message (traceback to the logs). Re-raises for an InternalCall."""
    if isinstance(grpc_context, InternalCall):
        raise error  # another deployment called: it handles the error
    if isinstance(error, TwinRayError):
        grpc_context.set_code(status_code(error))
        grpc_context.set_details(str(error))
        return
    log.error("unhandled error in %s", method_name, exc_info=error)
    grpc_context.set_code(grpc.StatusCode.INTERNAL)
    grpc_context.set_details(f"internal error in {method_name}; the server log has the details")


def grpc_stream_method(
    method: Callable[..., AsyncIterator[Response]],
) -> Callable[..., AsyncIterator[Response]]:
    """`grpc_method` for a server-streaming Serve method (an async generator). Serve sends a stream's
    status only with an exception, so after setting the status it re-raises: Serve keeps the code
    and details set on the context (its gRPCStatusError), and the client sees no traceback."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, grpc_context: Any) -> AsyncIterator[Response]:
        try:
            async for message in method(self, request, grpc_context):
                yield message
        except Exception as error:  # noqa: BLE001 - the last line of defence before the client
            set_status(error, grpc_context, method.__name__)
            raise

    return wrapper

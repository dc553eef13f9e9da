"""Turn TwinRay errors into gRPC statuses; never let a traceback reach a client."""
from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from services.common.internal_call import InternalCall
from shared.errors import TwinRayError

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
            except TwinRayError as error:
                if isinstance(grpc_context, InternalCall):
                    raise  # another deployment called: it handles the error
                grpc_context.set_code(status_code(error))
                grpc_context.set_details(str(error))
            except Exception:  # noqa: BLE001 - the last line of defence before the client
                log.exception("unhandled error in %s", method.__name__)
                grpc_context.set_code(grpc.StatusCode.INTERNAL)
                grpc_context.set_details(f"internal error in {method.__name__}; the server log has the details")
            return empty_response()

        return wrapper

    return decorate

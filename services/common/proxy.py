"""TwinRay's hook inside Ray Serve's gRPC proxy: standard health checking, TLS and the bearer token.

Ray Serve 2.60 calls every `grpc_options.grpc_servicer_functions` entry as `fn(servicer, server)` on
its own `gRPCGenericServer` before starting it (serve/_private/grpc_util.py). Listed FIRST, this
function runs before the TwinRay services register, and:

- wraps the server's handler factory, so every RPC of every service Serve routes is checked before
  routing: a call on the plaintext port while TLS is on, or without the bearer token, gets
  UNAUTHENTICATED with one line. Calls between deployments use Serve handles and never come here.
- adds a TLS port (TWINRAY_TLS_PORT) to the same server when TWINRAY_TLS_CERT_FILE/KEY_FILE are set.
  Ray binds the plaintext port first and cannot be told not to; with TLS on it answers health only.
- registers grpc.health.v1.Health as a passthrough service (`add_passthrough_service`, the hook Serve
  uses for reflection): it runs in the proxy itself, because Serve routes a call without `application`
  metadata nowhere once more than one application is deployed (proxy_router.get_handle_for_endpoint),
  and Kubernetes probes send none. Health stays open (no token, plaintext port): probes can send
  neither, and it tells only SERVING or NOT_SERVING.

Also open, as Serve registers them outside the factory: its own RayServeAPIService (ListApplications,
Healthz) and gRPC reflection (`grpc_options.enable_reflection`): names and schemas, no data.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from twinray.services.common.auth import token_refusal
from twinray.services.common.health import HEALTH_APP, LIVENESS
from twinray.services.common.tls import server_credentials, tls_files
from twinray.shared.platform.config import Settings

log = logging.getLogger("twinray.services.proxy")
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVE_API_SERVICE = "ray.serve.RayServeAPIService"
DEFAULT_HEALTH_BUDGET_S = 5.0  # when a probe sends no deadline


def add_to_proxy(servicer: Any, server: Any) -> None:
    """The `grpc_servicer_functions` entry (first in the list): see the module docstring."""
    settings = Settings.from_env()
    registered = _service_names(server)
    if registered - {SERVE_API_SERVICE}:
        raise RuntimeError(
            f"twinray.services.common.proxy.add_to_proxy must come first in grpc_servicer_functions; {sorted(registered)} came before it"
        )
    files = tls_files(settings)
    guard = CallGuard(settings.auth_token, tls_port=settings.tls_port if files else 0)
    server.service_handler_factory = guard.wrap_factory(server.service_handler_factory)
    if files:
        server.add_secure_port(f"[::]:{settings.tls_port}", server_credentials(*files))
    server.add_passthrough_service(HEALTH_SERVICE)
    health_pb2_grpc.add_HealthServicer_to_server(IngressHealth(lambda: _service_names(server)), server)


class CallGuard:
    """Decides, before Serve routes it, whether an RPC may go on."""

    def __init__(self, token: str, *, tls_port: int = 0) -> None:
        self.token = token
        self.tls_port = tls_port  # 0 = TLS off

    def refusal(self, context: grpc.aio.ServicerContext) -> str:
        """The one-line reason to refuse the call, or an empty string to let it through."""
        if self.tls_port and context.auth_context().get("transport_security_type") != [b"ssl"]:
            return f"this port is plaintext and answers grpc.health.v1 only: call TwinRay over TLS on port {self.tls_port}"
        if self.token:
            return token_refusal(context.invocation_metadata() or (), self.token)
        return ""

    def wrap_factory(self, factory: Callable[..., Callable]) -> Callable[..., Callable]:
        """Serve's `service_handler_factory`, with this guard in front of every handler it makes."""

        @functools.wraps(factory)
        def guarded_factory(*args: Any, **kwargs: Any) -> Callable:
            return self.wrap(factory(*args, **kwargs))

        return guarded_factory

    def wrap(self, handler: Callable) -> Callable:
        if inspect.isasyncgenfunction(handler):  # server-streaming: an async generator

            async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if reason := self.refusal(context):
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
                async for message in handler(request, context):
                    yield message

            return guarded_stream

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if reason := self.refusal(context):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
            return await handler(request, context)

        return guarded


class IngressHealth(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 in the proxy: "liveness" answers here, everything else asks the health app."""

    def __init__(self, registered: Callable[[], set[str]], ask: Callable[[str, float], Awaitable[int]] | None = None) -> None:
        self.registered = registered  # the gRPC services this port serves, read when asked
        self.ask = ask or self._ask_health_app  # (service, budget_s) -> status
        self._handle: Any = None

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        service = request.service
        if service == LIVENESS:
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
        if service and service not in self.registered() - {HEALTH_SERVICE, SERVE_API_SERVICE}:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"unknown service {service!r}: ask for a twinray.v1 service, '' or 'liveness'"
            )
        remaining = context.time_remaining()
        budget = DEFAULT_HEALTH_BUDGET_S if remaining is None else max(0.05, min(remaining, 60.0) - 0.2)
        try:
            status = await asyncio.wait_for(self.ask(service, budget * 0.8), budget)
        except Exception as error:  # noqa: BLE001 - no health app, or too slow: not serving
            log.warning("health check of %r: the %r application did not answer (%s)", service, HEALTH_APP, type(error).__name__)
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        if status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN:  # this port serves it, nothing deploys it
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> Any:
        """Not offered (Kubernetes probes and grpc-health-probe use Check): UNIMPLEMENTED, one line."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Health/Watch is not offered: poll Health/Check")
        yield health_pb2.HealthCheckResponse()  # never reached; makes this the server-streaming handler it must be

    async def _ask_health_app(self, service: str, budget_s: float) -> int:
        if self._handle is None:
            from ray import serve  # in the proxy process, where Ray is running

            # Off the event loop (the first call connects to the controller); no existence check, another blocking call.
            self._handle = await asyncio.to_thread(
                serve.get_deployment_handle, "Health", app_name=HEALTH_APP, _check_exists=False
            )
        return await self._handle.check.remote(service, budget_s)


def _service_names(server: Any) -> set[str]:
    """The gRPC services registered on Serve's server so far ("pkg.Service")."""
    return {
        method.split("/")[1]
        for handlers in server.generic_rpc_handlers
        for method in getattr(handlers[0], "_method_handlers", {})
    }

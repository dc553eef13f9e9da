"""TwinRay's hook in Ray Serve's gRPC proxy, on the server Ray itself builds (its `start_grpc_server`,
the same sequence of servicer functions), without a Ray cluster: what Serve would do after routing is
a stand-in that records each call. Real gRPC, real TLS; the Ray Serve end to end is in
tests/integration/services/test_ingress_security.py."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ray.serve._private.grpc_util import start_grpc_server
from ray.serve.config import gRPCOptions

from twinray.services.common.auth import authorization_metadata
from twinray.services.common.proxy import IngressHealth
from twinray.v1 import defect_generation_pb2, defect_generation_pb2_grpc, segmentation_pb2, segmentation_pb2_grpc

TOKEN = "s3cr3t-token-for-tests"
HOOK = "twinray.services.common.proxy.add_to_proxy"
SERVICERS = [
    "twinray.v1.segmentation_pb2_grpc.add_SegmentationServicer_to_server",
    "twinray.v1.defect_generation_pb2_grpc.add_DefectGenerationServicer_to_server",
]
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StandIn:
    """Serve's `service_handler_factory` after routing: answers an empty message, records the method."""

    def __init__(self) -> None:
        self.reached: list[str] = []

    def __call__(self, service_method: str, streaming_type) -> object:
        if streaming_type.name.endswith("_STREAM"):

            async def stream(request, context):
                self.reached.append(service_method)
                yield b""

            return stream

        async def unary(request, context):
            self.reached.append(service_method)
            return b""

        return unary


@contextlib.asynccontextmanager
async def ray_grpc_server(functions: list[str]):
    stand_in, port = StandIn(), free_port()
    options = gRPCOptions(port=port, grpc_servicer_functions=functions)
    task, server = await start_grpc_server(stand_in, options, event_loop=asyncio.get_running_loop())
    try:
        yield stand_in, port
    finally:
        await server.stop(None)
        task.cancel()


async def segment(channel: grpc.aio.Channel, metadata=()) -> grpc.StatusCode:
    try:
        await segmentation_pb2_grpc.SegmentationStub(channel).Segment(segmentation_pb2.SegmentRequest(), metadata=metadata)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


async def generate(channel: grpc.aio.Channel, metadata=()) -> grpc.StatusCode:
    stub = defect_generation_pb2_grpc.DefectGenerationStub(channel)
    try:
        async for _ in stub.GenerateDataset(defect_generation_pb2.GenerateDatasetRequest(), metadata=metadata):
            pass
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


async def check(channel: grpc.aio.Channel, service: str) -> int:
    return (await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))).status


def test_the_token_is_checked_before_serve_routes_unary_and_streaming_calls(monkeypatch):
    monkeypatch.setenv("TWINRAY_AUTH_TOKEN", TOKEN)

    async def scenario():
        async with (
            ray_grpc_server([HOOK, *SERVICERS]) as (serve, port),
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            missing = "missing metadata 'authorization: Bearer <token>'"
            assert await segment(channel) == (grpc.StatusCode.UNAUTHENTICATED, missing)
            assert await generate(channel) == (grpc.StatusCode.UNAUTHENTICATED, missing)
            wrong = [("authorization", "Bearer not-it")]
            assert await segment(channel, wrong) == (grpc.StatusCode.UNAUTHENTICATED, "the bearer token is not valid")
            assert serve.reached == []  # nothing got past the ingress
            right = [authorization_metadata(TOKEN)]
            assert await segment(channel, right) == (grpc.StatusCode.OK, "")
            assert await generate(channel, right) == (grpc.StatusCode.OK, "")
            assert serve.reached == ["/twinray.v1.Segmentation/Segment", "/twinray.v1.DefectGeneration/GenerateDataset"]
            assert await check(channel, "liveness") == SERVING  # health needs no token

    asyncio.run(scenario())


def test_without_a_token_configured_calls_go_through(monkeypatch):
    monkeypatch.delenv("TWINRAY_AUTH_TOKEN", raising=False)

    async def scenario():
        async with (
            ray_grpc_server([HOOK, *SERVICERS]) as (serve, port),
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            assert await segment(channel) == (grpc.StatusCode.OK, "")

    asyncio.run(scenario())


def test_tls_port_serves_and_the_plaintext_port_answers_health_only(monkeypatch, tmp_path, self_signed):
    cert, key = self_signed(tmp_path)
    tls_port = free_port()
    monkeypatch.setenv("TWINRAY_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("TWINRAY_TLS_CERT_FILE", str(cert))
    monkeypatch.setenv("TWINRAY_TLS_KEY_FILE", str(key))
    monkeypatch.setenv("TWINRAY_TLS_PORT", str(tls_port))
    token = [authorization_metadata(TOKEN)]

    async def scenario():
        async with ray_grpc_server([HOOK, *SERVICERS]) as (serve, port):
            credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
            async with grpc.aio.secure_channel(f"localhost:{tls_port}", credentials) as tls:
                assert await segment(tls, token) == (grpc.StatusCode.OK, "")
                assert await check(tls, "liveness") == SERVING
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
                plaintext = f"this port is plaintext and answers grpc.health.v1 only: call TwinRay over TLS on port {tls_port}"
                assert await segment(plain, token) == (grpc.StatusCode.UNAUTHENTICATED, plaintext)
                assert await generate(plain, token) == (grpc.StatusCode.UNAUTHENTICATED, plaintext)
                assert await check(plain, "liveness") == SERVING
            assert serve.reached == ["/twinray.v1.Segmentation/Segment"]

    asyncio.run(scenario())


def test_unknown_service_names_are_not_found(monkeypatch):
    async def scenario():
        async with ray_grpc_server([HOOK, *SERVICERS]) as (_, port), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for name in ("twinray.v1.Nope", "grpc.health.v1.Health", "ray.serve.RayServeAPIService"):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await check(channel, name)
                assert info.value.code() == grpc.StatusCode.NOT_FOUND
                assert info.value.details() == f"unknown service {name!r}: ask for a twinray.v1 service, '' or 'liveness'"

    asyncio.run(scenario())


def test_the_hook_must_come_first(monkeypatch):
    async def scenario():
        async with ray_grpc_server([*SERVICERS, HOOK]):
            pass

    with pytest.raises(RuntimeError, match="must come first in grpc_servicer_functions"):
        asyncio.run(scenario())


def test_a_bad_tls_setting_stops_the_proxy_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("TWINRAY_TLS_CERT_FILE", str(tmp_path / "absent.crt"))
    monkeypatch.setenv("TWINRAY_TLS_KEY_FILE", str(tmp_path / "absent.key"))

    async def scenario():
        async with ray_grpc_server([HOOK, *SERVICERS]):
            pass

    with pytest.raises(ValueError, match=r"^TLS file .*absent.crt does not exist$"):
        asyncio.run(scenario())


# --- the proxy's Health servicer, with the health application's answers given ---------------------


@contextlib.asynccontextmanager
async def health_server(ask):
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(IngressHealth(lambda: {"twinray.v1.Segmentation"}, ask), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield health_pb2_grpc.HealthStub(channel)
    finally:
        await server.stop(None)


def test_health_passes_on_the_apps_answer_and_its_deadline():
    asked = []

    async def ask(service: str, budget_s: float) -> int:
        asked.append((service, budget_s))
        return {"": SERVING, "twinray.v1.Segmentation": health_pb2.HealthCheckResponse.SERVICE_UNKNOWN}[service]

    async def scenario():
        async with health_server(ask) as stub:
            assert (await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)).status == SERVING
            # served on this port but deployed by no application: not serving
            assert (await stub.Check(health_pb2.HealthCheckRequest(service="twinray.v1.Segmentation"))).status == NOT_SERVING

    asyncio.run(scenario())
    (_, with_deadline), (_, without) = asked
    assert 1.0 < with_deadline < 2.0 and without == pytest.approx(4.0)  # 80% of what the caller waits, 5 s if it does not say


def test_a_slow_or_failing_health_app_is_not_serving_within_the_probes_deadline():
    async def slow(service: str, budget_s: float) -> int:
        await asyncio.sleep(30)
        return SERVING

    async def failing(service: str, budget_s: float) -> int:
        raise ConnectionError("no health app")

    async def scenario():
        for ask in (slow, failing):
            async with health_server(ask) as stub:
                started = asyncio.get_running_loop().time()
                assert (await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)).status == NOT_SERVING
                assert asyncio.get_running_loop().time() - started < 1.0

    asyncio.run(scenario())

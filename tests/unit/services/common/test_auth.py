"""The bearer token: what passes, what is refused and why (one line, never the token), what a client
sends over real gRPC, and that no Settings repr shows a credential."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from twinray.services.common.auth import authorization_metadata, token_refusal
from twinray.services.common.client import BearerToken, client_channel, open_channel
from twinray.shared.platform.config import Settings

TOKEN = "0123456789abcdef-token"


@pytest.mark.parametrize(
    "metadata",
    [
        [("authorization", f"Bearer {TOKEN}")],
        [("authorization", f"bearer {TOKEN}")],  # the scheme is case-insensitive (RFC 7235)
        [("Authorization", f"Bearer  {TOKEN} ")],
        [("application", "segmentation"), ("authorization", f"Bearer {TOKEN}".encode())],
    ],
)
def test_the_right_token_passes(metadata):
    assert token_refusal(metadata, TOKEN) == ""


@pytest.mark.parametrize(
    "metadata, reason",
    [
        ([], "missing metadata 'authorization: Bearer <token>'"),
        ([("application", "segmentation")], "missing metadata 'authorization: Bearer <token>'"),
        ([("authorization", TOKEN)], "the 'authorization' metadata must be 'Bearer <token>'"),
        ([("authorization", f"Basic {TOKEN}")], "the 'authorization' metadata must be 'Bearer <token>'"),
        ([("authorization", "Bearer")], "the 'authorization' metadata must be 'Bearer <token>'"),
        ([("authorization", f"Bearer {TOKEN[:-1]}")], "the bearer token is not valid"),
        ([("authorization", f"Bearer {TOKEN}0")], "the bearer token is not valid"),
        ([("authorization", f"Bearer {TOKEN.upper()}")], "the bearer token is not valid"),
        ([("authorization", "Bearer x"), ("authorization", f"Bearer {TOKEN}")], "the bearer token is not valid"),
    ],
    ids=["none", "other metadata", "no scheme", "basic", "empty", "shorter", "longer", "case", "first counts"],
)
def test_anything_else_is_refused_in_one_line_without_the_token(metadata, reason):
    refusal = token_refusal(metadata, TOKEN)
    assert refusal == reason and TOKEN not in refusal and "\n" not in refusal


def test_no_settings_repr_shows_a_credential():
    settings = Settings.from_env(
        {"TWINRAY_AUTH_TOKEN": TOKEN, "TWINRAY_STORE_ACCESS_KEY": "AKIDSETTINGS", "TWINRAY_STORE_SECRET_KEY": "sk-settings"}
    )
    assert settings.auth_token == TOKEN and settings.store_secret_key == "sk-settings"
    for text in (repr(settings), str(settings), f"{settings}", repr(BearerToken(TOKEN))):
        assert TOKEN not in text and "AKIDSETTINGS" not in text and "sk-settings" not in text


class Recorder(health_pb2_grpc.HealthServicer):
    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    def Check(self, request, context):  # noqa: N802 - the generated servicer's name
        self.metadata.append(dict(context.invocation_metadata()))
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture
def recorder():
    recorder, server = Recorder(), grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield recorder, port
    server.stop(None)


def test_a_client_channel_sends_the_token_with_every_call_and_its_own_metadata(recorder):
    recorder, port = recorder
    with open_channel(f"127.0.0.1:{port}", token=TOKEN) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        stub.Check(health_pb2.HealthCheckRequest(), metadata=[("application", "health")])
        stub.Check.future(health_pb2.HealthCheckRequest()).result()
    with open_channel(f"127.0.0.1:{port}") as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    first, second, without = recorder.metadata
    assert first["authorization"] == second["authorization"] == f"Bearer {TOKEN}" and first["application"] == "health"
    assert "authorization" not in without


def test_twinray_client_takes_the_token_from_the_environment_unless_given(recorder, monkeypatch):
    recorder, port = recorder
    settings = Settings.from_env({"TWINRAY_AUTH_TOKEN": TOKEN, "TWINRAY_GRPC_PORT": str(port)})
    for token, expected in (("", TOKEN), ("from-the-flag", "from-the-flag")):
        with client_channel(settings, token=token) as channel:  # localhost:$TWINRAY_GRPC_PORT
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert recorder.metadata[-1]["authorization"] == f"Bearer {expected}"
    assert authorization_metadata("t") == ("authorization", "Bearer t")

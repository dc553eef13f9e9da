"""What every Python client of a TwinRay service needs: an Image message from a local file, the
routing metadata Ray Serve's gRPC ingress picks the application by, and a channel that speaks TLS and
sends the bearer token when the server asks for them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from twinray.services.common.auth import authorization_metadata
from twinray.services.common.tls import channel_credentials
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.telemetry import metadata_for_current_span
from twinray.v1 import common_pb2


def image_message(path: Path, spacing_mm: tuple[float, float] | None = None) -> common_pb2.Image:
    """PNG or DICOM file bytes as an Image message (the server decodes and validates)."""
    data = path.read_bytes()
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        image = common_pb2.Image(png=data)
    elif data[128:132] == b"DICM" or path.suffix.lower() in {".dcm", ".dicom"}:
        image = common_pb2.Image(dicom=data)
    else:
        raise InvalidInput(f"{path} is neither a PNG nor a DICOM file")
    if spacing_mm:
        image.spacing.CopyFrom(common_pb2.PixelSpacing(row_mm=spacing_mm[0], col_mm=spacing_mm[1]))
    return image


def routing_metadata(application: str) -> list[tuple[str, str]]:
    """Ray Serve picks the application from this metadata; trace context rides along."""
    return [("application", application), *metadata_for_current_span()]


def open_channel(address: str, *, token: str = "", tls: bool = False, tls_ca_file: str = "") -> grpc.Channel:
    """A channel to `address`: TLS when `tls` or a CA file is given (trusting that CA, else the system's),
    and `authorization: Bearer <token>` on every call when a token is given."""
    if tls or tls_ca_file:
        channel = grpc.secure_channel(address, channel_credentials(tls_ca_file))
    else:
        channel = grpc.insecure_channel(address)
    return grpc.intercept_channel(channel, BearerToken(token)) if token else channel


def client_channel(settings: Settings, address: str = "", *, token: str = "", tls_ca_file: str = "") -> grpc.Channel:
    """`open_channel` with the defaults of `twinray client`: the token and CA file from the flags or
    else TWINRAY_AUTH_TOKEN / TWINRAY_TLS_CA_FILE; with TLS, localhost's TLS port by default."""
    tls_ca_file = tls_ca_file or settings.tls_ca_file
    port = settings.tls_port if tls_ca_file else settings.grpc_port
    return open_channel(address or f"localhost:{port}", token=token or settings.auth_token, tls_ca_file=tls_ca_file)


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the authorization metadata to every call of a channel."""

    def __init__(self, token: str) -> None:
        self._metadata = authorization_metadata(token)

    def __repr__(self) -> str:
        return "BearerToken(<redacted>)"

    def _call(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any) -> Any:
        metadata = [*(details.metadata or ()), self._metadata]
        return continuation(details._replace(metadata=metadata), request)

    intercept_unary_unary = intercept_unary_stream = intercept_stream_unary = intercept_stream_stream = _call

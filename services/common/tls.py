"""TLS for the gRPC ingress: the server's credentials from PEM files, checked before anything starts.

Ray Serve 2.60's gRPC proxy binds only a plaintext port (`add_insecure_port` in its default_impl;
gRPCOptions has no TLS fields). TwinRay's proxy hook (twinray.services.common.proxy) adds a TLS port
to that same gRPC server before it starts, so TLS ends inside the proxy, not at a sidecar.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from twinray.shared.platform.config import Settings


def tls_files(settings: Settings) -> tuple[Path, Path] | None:
    """(certificate chain, key) when TLS is configured, None when not; both or neither must be set."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if not cert and not key:
        return None
    if not (cert and key):
        raise ValueError("set both TWINRAY_TLS_CERT_FILE and TWINRAY_TLS_KEY_FILE, or neither")
    return Path(cert), Path(key)


def check_tls_files(cert: Path, key: Path) -> None:
    """Raise ValueError (one line, no key material) unless `cert` and `key` are readable PEM and match."""
    for path in (cert, key):
        if not path.is_file():
            raise ValueError(f"TLS file {path} does not exist")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except OSError as error:  # ssl.SSLError is an OSError: unreadable, not PEM, or a key of another certificate
        raise ValueError(f"TLS certificate {cert} and key {key} cannot be used together: {error.strerror or error}") from None


def server_credentials(cert: Path, key: Path) -> grpc.ServerCredentials:
    check_tls_files(cert, key)
    return grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])


def channel_credentials(ca_file: str = "") -> grpc.ChannelCredentials:
    """A client's TLS credentials: trust `ca_file` (PEM), or the system's roots when empty."""
    if not ca_file:
        return grpc.ssl_channel_credentials()
    try:
        return grpc.ssl_channel_credentials(root_certificates=Path(ca_file).read_bytes())
    except OSError as error:
        raise ValueError(f"TLS CA file {ca_file} cannot be read: {error.strerror or error}") from None

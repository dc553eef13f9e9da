"""Settings from `TWINRAY_*` environment variables, resolved once and passed explicitly.

Ray workers and Serve replicas may run in another working directory, so every path is made
absolute here and `Settings.as_env()` re-exports the resolved values to child processes.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything configurable. Field `x` is read from `TWINRAY_X`."""

    home: Path = Path(".twinray")
    # Artifact store: empty endpoint = local directory under `store_root` (the embedded default).
    store_root: Path = Path(".twinray/store")
    store_endpoint: str = ""
    store_access_key: str = dataclasses.field(default="", repr=False)  # credentials: never in a repr
    store_secret_key: str = dataclasses.field(default="", repr=False)
    store_secure: bool = False
    store_bucket: str = "twinray"
    store_region: str = ""
    # Ray: empty address = start a local Ray instance.
    ray_address: str = ""
    grpc_port: int = 9000
    http_port: int = 8000
    # Triton gRPC endpoint (host:port) that runs the services' networks; empty = run them in-process.
    triton_url: str = ""
    # OpenTelemetry exporter: "none", "console" or "otlp" (then `otel_endpoint` is used).
    otel_exporter: str = "none"
    otel_endpoint: str = "http://localhost:4317"
    # Input limits.
    max_image_bytes: int = 64 * 1024 * 1024
    max_image_side: int = 8192
    # Security. A non-empty token: every RPC must carry `authorization: Bearer <token>`; clients send it.
    auth_token: str = dataclasses.field(default="", repr=False)
    # TLS for the gRPC ingress: a PEM certificate chain and its key turn on TLS on `tls_port`; the plain
    # `grpc_port` then answers grpc.health.v1 only (Kubernetes gRPC probes cannot speak TLS).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_port: int = 9443
    # Clients: the PEM CA bundle that signed the server's certificate; set = connect with TLS.
    tls_ca_file: str = ""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(f"TWINRAY_{field.name.upper()}")
            if raw is None or raw == "":
                continue
            if field.type in ("int", int):
                try:
                    values[field.name] = int(raw)
                except ValueError:
                    raise ValueError(f"TWINRAY_{field.name.upper()} must be an integer, got {raw!r}") from None
            elif field.type in ("bool", bool):
                values[field.name] = _bool(raw)
            elif field.type in ("Path", Path):
                values[field.name] = Path(raw)
            else:
                values[field.name] = raw
        settings = cls(**values)  # type: ignore[arg-type]
        if "store_root" not in values and "home" in values:
            settings = dataclasses.replace(settings, store_root=settings.home / "store")
        if settings.otel_exporter not in {"none", "console", "otlp"}:
            raise ValueError(f"TWINRAY_OTEL_EXPORTER must be none, console or otlp, got {settings.otel_exporter!r}")
        return dataclasses.replace(
            settings, home=settings.home.expanduser().resolve(), store_root=settings.store_root.expanduser().resolve()
        )

    def as_env(self) -> dict[str, str]:
        """The resolved settings as `TWINRAY_*` variables, for Ray workers and Serve replicas."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[f"TWINRAY_{field.name.upper()}"] = str(int(value)) if isinstance(value, bool) else str(value)
        return out

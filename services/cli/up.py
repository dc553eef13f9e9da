"""`twinray up`: start (or join) Ray, start Serve with gRPC ingress, deploy the Serve config file.

TLS and the bearer token are enforced inside Serve's gRPC proxy by TwinRay's hook (it must come
first in `grpc_servicer_functions`), which reads them from the TWINRAY_* environment of the proxy
process: here the environment Ray starts with. They are checked before anything starts.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import yaml
from ray import serve
from ray.serve.context import _get_global_client
from ray.serve.schema import ApplicationStatus, ServeDeploySchema

from twinray.services import SERVE_CONFIG as DEFAULT_CONFIG
from twinray.services.common.health import HEALTH_APP
from twinray.services.common.tls import check_tls_files, tls_files
from twinray.shared.platform.config import Settings
from twinray.shared.platform.ray_runtime import ensure_ray

PROXY_HOOK = "twinray.services.common.proxy.add_to_proxy"


def load_serve_config(path: Path, settings: Settings) -> dict[str, Any]:
    """The Serve config at `path`, with the gRPC/HTTP ports taken from settings."""
    config = copy.deepcopy(yaml.safe_load(path.read_text()))
    config["grpc_options"]["port"] = settings.grpc_port
    config["http_options"]["port"] = settings.http_port
    return config


def deploy(
    settings: Settings, config_path: Path = DEFAULT_CONFIG, *, only: list[str] | None = None, timeout_s: float = 300.0
) -> dict[str, Any]:
    """Start Serve and deploy every application in the config (or those named in `only`); blocks
    until they are RUNNING and returns the config that was deployed."""
    config = load_serve_config(config_path, settings)
    if only is not None:
        config["applications"] = [app for app in config["applications"] if app["name"] in only]
    health_covers_deployed(config)
    settings = checked_security(settings, config)
    ensure_ray(settings)
    serve.start(http_options=config["http_options"], grpc_options=config["grpc_options"])
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))
    wait_running([app["name"] for app in config["applications"]], timeout_s)
    return config


def wait_running(names: list[str], timeout_s: float) -> None:
    """Until every application named is RUNNING. Serve's own blocking deploy gives up after 60 s, less
    than several torch replicas take to start on two busy cores; a failed one raises at once, with Serve's message."""
    deadline = time.monotonic() + timeout_s
    while True:
        apps = serve.status().applications
        failed = {
            name: apps[name].message for name in names if name in apps and apps[name].status == ApplicationStatus.DEPLOY_FAILED
        }
        if failed:
            raise RuntimeError(f"Serve applications failed to deploy: {failed}")
        if all(name in apps and apps[name].status == ApplicationStatus.RUNNING for name in names):
            return
        if time.monotonic() > deadline:
            states = {name: apps[name].status.value if name in apps else "absent" for name in names}
            raise TimeoutError(f"Serve applications not all RUNNING after {timeout_s:.0f} s: {states}")
        time.sleep(0.5)


def checked_security(settings: Settings, config: dict[str, Any]) -> Settings:
    """Settings whose TLS files are absolute (the proxy runs elsewhere) and usable, in a config whose
    first gRPC servicer function is the proxy hook that enforces TLS and the token; ValueError if not."""
    files = tls_files(settings)
    if files:
        check_tls_files(*files)
        settings = dataclasses.replace(settings, tls_cert_file=str(files[0].resolve()), tls_key_file=str(files[1].resolve()))
    functions = config["grpc_options"].get("grpc_servicer_functions") or []
    if (files or settings.auth_token) and functions[:1] != [PROXY_HOOK]:
        raise ValueError(
            f"TLS or TWINRAY_AUTH_TOKEN is set but the Serve config does not list {PROXY_HOOK} first in grpc_servicer_functions"
        )
    return settings


def health_covers_deployed(config: dict[str, Any]) -> None:
    """The health application answers for the services whose applications are deployed, no others."""
    deployed = {app["name"] for app in config["applications"]}
    for app in config["applications"]:
        if app["name"] == HEALTH_APP:
            services = app.get("args", {}).get("services", {})
            app["args"]["services"] = {service: name for service, name in services.items() if name in deployed}

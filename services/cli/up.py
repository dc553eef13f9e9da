"""`twinray up`: start (or join) Ray, start Serve with gRPC ingress, deploy the Serve config file."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import yaml
from ray import serve
from ray.serve.context import _get_global_client
from ray.serve.schema import ApplicationStatus, ServeDeploySchema

from twinray.services import SERVE_CONFIG as DEFAULT_CONFIG
from twinray.shared.platform.config import Settings
from twinray.shared.platform.ray_runtime import ensure_ray


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

"""`twinray up`: start (or join) Ray, start Serve with gRPC ingress, deploy the Serve config file."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from ray import serve
from ray.serve.context import _get_global_client
from ray.serve.schema import ServeDeploySchema

from twinray.services import SERVE_CONFIG as DEFAULT_CONFIG
from twinray.shared.platform.config import Settings
from twinray.shared.platform.ray_runtime import ensure_ray


def load_serve_config(path: Path, settings: Settings) -> dict[str, Any]:
    """The Serve config at `path`, with the gRPC/HTTP ports taken from settings."""
    config = copy.deepcopy(yaml.safe_load(path.read_text()))
    config["grpc_options"]["port"] = settings.grpc_port
    config["http_options"]["port"] = settings.http_port
    return config


def deploy(settings: Settings, config_path: Path = DEFAULT_CONFIG, *, only: list[str] | None = None) -> dict[str, Any]:
    """Start Serve and deploy every application in the config (or those named in `only`); blocks
    until they are RUNNING and returns the config that was deployed."""
    config = load_serve_config(config_path, settings)
    if only is not None:
        config["applications"] = [app for app in config["applications"] if app["name"] in only]
    ensure_ray(settings)
    serve.start(http_options=config["http_options"], grpc_options=config["grpc_options"])
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config), _blocking=True)
    return config

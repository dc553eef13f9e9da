"""Starting or joining Ray, the one way training, serving and the CLI do it."""

from __future__ import annotations

import os

from twinray.shared.platform.config import Settings


def ensure_ray(settings: Settings, *, num_cpus: int | None = None) -> None:
    """Join `TWINRAY_RAY_ADDRESS`, or start local Ray with the resolved settings in its environment."""
    import ray  # here, not at the top: shared/ imports without Ray (the GPU machine has none)

    if ray.is_initialized():
        return
    os.environ.update(settings.as_env())
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if settings.ray_address:
        ray.init(address=settings.ray_address, runtime_env={"env_vars": settings.as_env()})
    else:
        context = ray.init(num_cpus=num_cpus)
        if context.dashboard_url:
            print(f"Ray dashboard (training metrics, logs): http://{context.dashboard_url}", flush=True)

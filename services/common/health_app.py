"""The `health` Serve application: the status of each TwinRay gRPC service, for grpc.health.v1.

The gRPC ingress answers Health/Check itself (twinray.services.common.proxy: Kubernetes probes send
no `application` metadata, so Serve could not route them) and asks this application, which asks each
service's ingress deployment (`health()`: model loaded, store reachable) through a Serve handle. The
Serve config names the application of each service, so renamed applications stay covered.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from grpc_health.v1 import health_pb2
from ray import serve

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
BUSY_GRACE_S = 30.0  # a replica too busy to answer in time still counts as serving this long after its last "yes"


@serve.deployment(name="Health", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
class HealthDeployment:
    def __init__(self, services: dict[str, str]) -> None:
        self.services = dict(services)  # "twinray.v1.Segmentation" -> its application, e.g. "segmentation"
        self._last_serving: dict[str, float] = {}

    async def check(self, service: str, budget_s: float = 1.0) -> int:
        """SERVING / NOT_SERVING of one service, of all of them for "", SERVICE_UNKNOWN for a name
        this application does not cover. Answers within `budget_s` (the probe's own deadline)."""
        if service == "":
            statuses = await asyncio.gather(*(self._service(name, budget_s) for name in self.services))
            return SERVING if statuses and all(status == SERVING for status in statuses) else NOT_SERVING
        if service not in self.services:
            return UNKNOWN
        return await self._service(service, budget_s)

    async def _service(self, service: str, budget_s: float) -> int:
        deployment = service.rpartition(".")[2]  # each service's ingress deployment is named like it
        try:
            handle = serve.get_deployment_handle(deployment, app_name=self.services[service], _check_exists=False)
            ready = await asyncio.wait_for(handle.health.remote(), budget_s)
        except TimeoutError:
            recent = time.monotonic() - self._last_serving.get(service, -BUSY_GRACE_S) < BUSY_GRACE_S
            return SERVING if recent else NOT_SERVING
        except Exception:  # noqa: BLE001 - application absent, replica dead: not serving
            return NOT_SERVING
        if ready:
            self._last_serving[service] = time.monotonic()
            return SERVING
        return NOT_SERVING


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder named in the Serve config: `args: {services: {grpc service name: application}}`."""
    services = args.get("services") or {}
    if not isinstance(services, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in services.items()):
        raise ValueError(f"health needs args.services: a mapping of gRPC service name to application, got {services!r}")
    return HealthDeployment.bind(services=services)

"""Ray Serve deployment of the Detection service. It asks the NormalSynthesis application for the
residual (which asks Segmentation for the anatomy), or Segmentation for the anatomy map, through
deployment handles with their public protobuf contracts; the detector forward is batched across
concurrent requests with `@serve.batch` (max_batch_size 1 = unbatched, for comparison)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import torch
from ray import serve

from twinray.services.common.errors import grpc_method
from twinray.services.common.health import Readiness
from twinray.services.common.internal_call import call_app
from twinray.services.detection.servicer import Detections, DetectionServicer
from twinray.shared.platform.config import Settings
from twinray.shared.platform.telemetry import configure_tracing
from twinray.v1 import common_pb2, detection_pb2


@serve.deployment(name="Detection", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=16)
class DetectionDeployment:
    def __init__(
        self,
        model_version: str = "latest",
        normal_synthesis_app: str = "normal-synthesis",
        segmentation_app: str = "segmentation",
        max_batch_size: int = 8,
        batch_wait_timeout_s: float = 0.01,
    ) -> None:
        settings = Settings.from_env()
        configure_tracing(settings, "twinray-detection")
        self.servicer = DetectionServicer(settings, model_version=model_version)
        self.readiness = Readiness(self.servicer.store, lambda: self.servicer.detector(common_pb2.ModelRef()))
        self.synthesize = functools.partial(call_app, "NormalSynthesis", "Synthesize", normal_synthesis_app)
        self.segment = functools.partial(call_app, "Segmentation", "Segment", segmentation_app)
        self.forward_batch.set_max_batch_size(max_batch_size)
        self.forward_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """`user_config: {model_version: "3"}` switches the pinned version without a restart."""
        if "model_version" in user_config:
            self.servicer.models.repin(str(user_config["model_version"]))

    async def health(self) -> bool:
        """For grpc.health.v1 (through the health app): pinned detector loaded, its twin still published, store reachable."""
        return await self.readiness.check()

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def forward_batch(self, batch: list[tuple[int, torch.Tensor]]) -> list[Detections]:
        """One detector forward for the requests that arrived together, off the event loop so that
        requests keep arriving (and decoding, and waiting on their twins) meanwhile."""
        return await asyncio.to_thread(self.servicer.run_detector, batch)

    async def forward(self, version: int, inputs: torch.Tensor) -> Detections:
        return await self.forward_batch((version, inputs))

    @grpc_method(detection_pb2.DetectResponse)
    async def Detect(self, request: detection_pb2.DetectRequest, grpc_context: Any) -> detection_pb2.DetectResponse:
        return await self.servicer.detect(
            request, grpc_context.invocation_metadata(), synthesize=self.synthesize, segment=self.segment, forward=self.forward
        )


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder named in the Serve config: `args: {model_version, normal_synthesis_app,
    segmentation_app, max_batch_size, batch_wait_timeout_s}`."""
    max_batch_size, batch_wait_timeout_s = int(args.get("max_batch_size", 8)), float(args.get("batch_wait_timeout_s", 0.01))
    if max_batch_size < 1 or not batch_wait_timeout_s >= 0:
        raise ValueError(
            f"detection needs max_batch_size >= 1 and batch_wait_timeout_s >= 0, got {max_batch_size}, {batch_wait_timeout_s}"
        )
    return DetectionDeployment.bind(
        model_version=str(args.get("model_version", "latest")),
        normal_synthesis_app=str(args.get("normal_synthesis_app", "normal-synthesis")),
        segmentation_app=str(args.get("segmentation_app", "segmentation")),
        max_batch_size=max_batch_size,
        batch_wait_timeout_s=batch_wait_timeout_s,
    )

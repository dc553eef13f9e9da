"""Ray Serve deployment of the Segmentation service, reached through Serve's gRPC ingress."""

from __future__ import annotations

from typing import Any

from ray import serve

from twinray.services.common.errors import grpc_method
from twinray.services.common.health import Readiness
from twinray.services.segmentation.servicer import SegmentationServicer
from twinray.shared.platform.config import Settings
from twinray.shared.platform.telemetry import configure_tracing
from twinray.v1 import segmentation_pb2


@serve.deployment(name="Segmentation", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=16)
class SegmentationDeployment:
    def __init__(self, model_version: str = "latest") -> None:
        settings = Settings.from_env()
        configure_tracing(settings, "twinray-segmentation")
        self.servicer = SegmentationServicer(settings, model_version=model_version)
        self.readiness = Readiness(self.servicer.store, self.servicer.models.get)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """`user_config: {model_version: "3"}` switches the pinned version without a restart."""
        if "model_version" in user_config:
            self.servicer.models.repin(str(user_config["model_version"]))

    async def health(self) -> bool:
        """For grpc.health.v1 (through the health app): pinned model loaded and the store reachable."""
        return await self.readiness.check()

    @grpc_method(segmentation_pb2.SegmentResponse)
    async def Segment(self, request: segmentation_pb2.SegmentRequest, grpc_context: Any) -> segmentation_pb2.SegmentResponse:
        """gRPC ingress, or another deployment's handle with an InternalCall as context."""
        return self.servicer.segment(request, grpc_context.invocation_metadata())


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder named in the Serve config: `args: {model_version: "latest"}`."""
    return SegmentationDeployment.bind(model_version=str(args.get("model_version", "latest")))

"""Ray Serve deployment of the NormalSynthesis service; it asks the Segmentation application for
anatomy maps through a deployment handle, with the Segmentation protobuf contract."""

from __future__ import annotations

import functools
from typing import Any

from ray import serve

from twinray.services.common.errors import grpc_method
from twinray.services.common.health import Readiness
from twinray.services.common.internal_call import call_app
from twinray.services.normal_synthesis.servicer import NormalSynthesisServicer
from twinray.shared.platform.config import Settings
from twinray.shared.platform.telemetry import configure_tracing
from twinray.v1 import normal_synthesis_pb2


@serve.deployment(name="NormalSynthesis", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8)
class NormalSynthesisDeployment:
    def __init__(self, model_version: str = "latest", segmentation_app: str = "segmentation") -> None:
        settings = Settings.from_env()
        configure_tracing(settings, "twinray-normal-synthesis")
        self.servicer = NormalSynthesisServicer(settings, model_version=model_version)
        self.readiness = Readiness(self.servicer.store, self.servicer.models.get)
        self.segmentation_app = segmentation_app

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """`user_config: {model_version: "3"}` switches the pinned version without a restart."""
        if "model_version" in user_config:
            self.servicer.models.repin(str(user_config["model_version"]))

    async def health(self) -> bool:
        """For grpc.health.v1 (through the health app): pinned model loaded and the store reachable."""
        return await self.readiness.check()

    @grpc_method(normal_synthesis_pb2.SynthesizeResponse)
    async def Synthesize(
        self, request: normal_synthesis_pb2.SynthesizeRequest, grpc_context: Any
    ) -> normal_synthesis_pb2.SynthesizeResponse:
        segment = functools.partial(call_app, "Segmentation", "Segment", self.segmentation_app)
        return await self.servicer.synthesize(request, grpc_context.invocation_metadata(), segment)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder named in the Serve config: `args: {model_version, segmentation_app}`."""
    return NormalSynthesisDeployment.bind(
        model_version=str(args.get("model_version", "latest")),
        segmentation_app=str(args.get("segmentation_app", "segmentation")),
    )

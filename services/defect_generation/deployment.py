"""Ray Serve deployment of the DefectGeneration service, reached through Serve's gRPC ingress."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from twinray.services.common.errors import grpc_method, grpc_stream_method
from twinray.services.common.health import Readiness
from twinray.services.defect_generation.model_cache import ENCODER, MASKS, NORMAL
from twinray.services.defect_generation.servicer import DefectGenerationServicer
from twinray.shared.platform.config import Settings
from twinray.shared.platform.telemetry import configure_tracing
from twinray.v1 import defect_generation_pb2 as pb

_VERSION_ARGS = {"masks_version": MASKS, "normal_version": NORMAL, "encoder_version": ENCODER}


@serve.deployment(name="DefectGeneration", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=4)
class DefectGenerationDeployment:
    def __init__(self, masks_version: str = "latest", normal_version: str = "latest", encoder_version: str = "latest") -> None:
        settings = Settings.from_env()
        configure_tracing(settings, "twinray-defect-generation")
        self.servicer = DefectGenerationServicer(
            settings, masks_version=masks_version, normal_version=normal_version, encoder_version=encoder_version
        )
        models = self.servicer.models
        self.readiness = Readiness(self.servicer.store, lambda: models.get(models.resolve(pb.DefectModels())))

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """`user_config: {masks_version: "3", normal_version: "2", encoder_version: "1"}` (any of them)
        switches the pinned versions without a restart; they are resolved on the next request."""
        self.servicer.models.repin({_VERSION_ARGS[arg]: str(v) for arg, v in user_config.items() if arg in _VERSION_ARGS})

    async def health(self) -> bool:
        """For grpc.health.v1 (through the health app): pinned models loaded and the store reachable."""
        return await self.readiness.check()

    @grpc_method(pb.SampleMasksResponse)
    async def SampleMasks(self, request: pb.SampleMasksRequest, grpc_context: Any) -> pb.SampleMasksResponse:
        return await self.servicer.sample_masks(request, grpc_context.invocation_metadata())

    @grpc_method(pb.SynthesizeDefectResponse)
    async def Synthesize(self, request: pb.SynthesizeDefectRequest, grpc_context: Any) -> pb.SynthesizeDefectResponse:
        return await self.servicer.synthesize(request, grpc_context.invocation_metadata())

    @grpc_stream_method
    async def GenerateDataset(
        self, request: pb.GenerateDatasetRequest, grpc_context: Any
    ) -> AsyncIterator[pb.GenerateDatasetProgress]:
        async for progress in self.servicer.generate_dataset(request, grpc_context.invocation_metadata()):
            yield progress


def build_app(args: dict[str, Any]) -> serve.Application:
    """Application builder named in the Serve config: `args: {masks_version, normal_version, encoder_version}`
    (each defaults to "latest", resolved on the first request)."""
    return DefectGenerationDeployment.bind(**{arg: str(args.get(arg, "latest")) for arg in _VERSION_ARGS})

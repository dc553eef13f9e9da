"""Thin Python client of the DefectGeneration service (the request messages are built by the caller)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from twinray.services.common.client import routing_metadata
from twinray.v1 import defect_generation_pb2 as pb
from twinray.v1 import defect_generation_pb2_grpc

APPLICATION = "defect-generation"


def _stub(channel: grpc.Channel) -> defect_generation_pb2_grpc.DefectGenerationStub:
    return defect_generation_pb2_grpc.DefectGenerationStub(channel)


def sample_masks(channel: grpc.Channel, request: pb.SampleMasksRequest, *, timeout_s: float = 120.0) -> pb.SampleMasksResponse:
    return _stub(channel).SampleMasks(request, metadata=routing_metadata(APPLICATION), timeout=timeout_s)


def synthesize_defect(
    channel: grpc.Channel, request: pb.SynthesizeDefectRequest, *, timeout_s: float = 120.0
) -> pb.SynthesizeDefectResponse:
    return _stub(channel).Synthesize(request, metadata=routing_metadata(APPLICATION), timeout=timeout_s)


def generate_dataset(
    channel: grpc.Channel, request: pb.GenerateDatasetRequest, *, timeout_s: float | None = None
) -> Iterator[pb.GenerateDatasetProgress]:
    """The progress stream (also a grpc.Call). Its `.cancel()` ends the stream only: Ray Serve's gRPC
    ingress does not pass it on, and the job runs on to its manifest."""
    return _stub(channel).GenerateDataset(request, metadata=routing_metadata(APPLICATION), timeout=timeout_s)

"""Thin Python client of the NormalSynthesis service."""

from __future__ import annotations

import grpc

from twinray.services.common.client import routing_metadata
from twinray.v1 import common_pb2, normal_synthesis_pb2, normal_synthesis_pb2_grpc


def synthesize(
    channel: grpc.Channel,
    image: common_pb2.Image,
    *,
    anatomy_png: bytes = b"",
    version: str = "",
    segmentation_version: str = "",
    timeout_s: float = 60.0,
) -> normal_synthesis_pb2.SynthesizeResponse:
    """NormalSynthesis/Synthesize; `anatomy_png` (8-bit label PNG of the image) skips segmentation."""
    stub = normal_synthesis_pb2_grpc.NormalSynthesisStub(channel)
    request = normal_synthesis_pb2.SynthesizeRequest(
        image=image,
        model=common_pb2.ModelRef(version=version),
        segmentation_model=common_pb2.ModelRef(version=segmentation_version),
    )
    if anatomy_png:
        request.anatomy.CopyFrom(common_pb2.LabelMap(png=anatomy_png))
    return stub.Synthesize(request, metadata=routing_metadata("normal-synthesis"), timeout=timeout_s)

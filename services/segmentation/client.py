"""Thin Python client of the Segmentation service."""

from __future__ import annotations

import grpc

from twinray.services.common.client import routing_metadata
from twinray.v1 import common_pb2, segmentation_pb2, segmentation_pb2_grpc


def segment(
    channel: grpc.Channel, image: common_pb2.Image, *, version: str = "", timeout_s: float = 60.0
) -> segmentation_pb2.SegmentResponse:
    stub = segmentation_pb2_grpc.SegmentationStub(channel)
    request = segmentation_pb2.SegmentRequest(image=image, model=common_pb2.ModelRef(version=version))
    return stub.Segment(request, metadata=routing_metadata("segmentation"), timeout=timeout_s)

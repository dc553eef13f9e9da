"""The Segment RPC as plain Python (no Ray): decode, run the published model, build the answer.

The Ray Serve deployment wraps this class; the benchmark and unit tests call it in-process.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from twinray.services.common.image_input import decode_image_message
from twinray.services.common.messages import anatomy_label_map
from twinray.services.common.model_cache import ModelCache
from twinray.services.common.triton_runner import triton_runner
from twinray.shared.data.anatomy import ANATOMY_CLASSES
from twinray.shared.models.segmentation.network import segmenter_from_weights
from twinray.shared.platform.config import Settings
from twinray.shared.platform.imaging import ImageLimits, logits_to_labels, to_model_input
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import open_store
from twinray.shared.platform.telemetry import current_trace_id, model_span, server_span
from twinray.v1 import common_pb2, segmentation_pb2

MODEL_NAME = "segmentation"


class SegmentationServicer:
    def __init__(self, settings: Settings, *, model_version: str = "latest") -> None:
        self.store = open_store(settings)
        self.limits = ImageLimits.from_settings(settings)
        self.models = ModelCache(
            ModelRegistry(self.store), MODEL_NAME, segmenter_from_weights, pinned=model_version, runner=triton_runner(settings)
        )

    def predict(self, pixels: np.ndarray, *, version: str = "", name: str = "") -> tuple[np.ndarray, int]:
        """Label map (H,W uint8) at the input resolution, and the model version that produced it."""
        resolved, model, config = self.models.get(version, name=name)
        height, width = pixels.shape
        with model_span(MODEL_NAME, resolved, height=height, width=width, batch_size=1), torch.inference_mode():
            logits = model(to_model_input(pixels, config["input_size"]))
        return logits_to_labels(logits[0], height, width), resolved

    def segment(
        self, request: segmentation_pb2.SegmentRequest, metadata: Iterable[tuple[str, str]] = ()
    ) -> segmentation_pb2.SegmentResponse:
        with server_span("twinray.v1.Segmentation/Segment", metadata):
            image = decode_image_message(request.image, self.limits, self.store)
            labels, version = self.predict(image.pixels, version=request.model.version, name=request.model.name)
            return self._response(labels, version, image.spacing_mm, current_trace_id())

    def _response(
        self, labels: np.ndarray, version: int, spacing: tuple[float, float] | None, trace_id: str
    ) -> segmentation_pb2.SegmentResponse:
        counts = np.bincount(labels.ravel(), minlength=len(ANATOMY_CLASSES))
        pixel_mm2 = spacing[0] * spacing[1] if spacing else 0.0
        return segmentation_pb2.SegmentResponse(
            label_map=anatomy_label_map(labels),
            areas=[
                segmentation_pb2.ClassArea(
                    index=i, name=n, pixels=int(counts[i]), area_mm2=float(counts[i]) * pixel_mm2, spacing_known=bool(spacing)
                )
                for i, n in enumerate(ANATOMY_CLASSES)
            ],
            spacing=common_pb2.PixelSpacing(row_mm=spacing[0], col_mm=spacing[1]) if spacing else None,
            provenance=common_pb2.Provenance(
                models=[common_pb2.ModelRef(name=MODEL_NAME, version=str(version))], trace_id=trace_id
            ),
        )

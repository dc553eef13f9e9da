"""The Synthesize RPC as plain Python (no Ray): anatomy map -> healthy twin -> residual.

The anatomy map comes from the request or from the Segmentation service, reached through an
injected async `segment` callable that speaks the Segmentation contract (a Serve handle in
production, an in-process SegmentationServicer in tests and benchmarks). Unless the request names
a segmentation version, it asks for the one the normal-synthesis model was trained with.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import numpy as np
import torch

from twinray.services.common.image_input import decode_image_message
from twinray.services.common.messages import anatomy_label_map
from twinray.services.common.model_cache import ModelCache
from twinray.services.common.triton_runner import triton_runner
from twinray.shared.data.anatomy import NUM_ANATOMY_CLASSES
from twinray.shared.models.components.twin import full_resolution_twin
from twinray.shared.models.normal_synthesis.network import normal_synthesizer_from_weights
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.imaging import DecodedImage, ImageLimits, decode_label_png, encode_float01_png16, labels_to_size
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import open_store
from twinray.shared.platform.telemetry import current_trace_id, model_span, server_span
from twinray.v1 import common_pb2, normal_synthesis_pb2, segmentation_pb2

MODEL_NAME = "normal-synthesis"
Segment = Callable[[segmentation_pb2.SegmentRequest], Awaitable[segmentation_pb2.SegmentResponse]]


def anatomy_from_message(anatomy: common_pb2.LabelMap, image: DecodedImage, limits: ImageLimits) -> np.ndarray:
    """A caller's anatomy map, checked against the image and the anatomy label set."""
    labels = decode_label_png(anatomy.png, limits)
    if labels.shape != (image.height, image.width):
        raise InvalidInput(f"anatomy map is {labels.shape[1]}x{labels.shape[0]} but the image is {image.width}x{image.height}")
    if labels.max() >= NUM_ANATOMY_CLASSES:
        raise InvalidInput(f"anatomy map has label {labels.max()}; the anatomy classes are 0..{NUM_ANATOMY_CLASSES - 1}")
    return labels


def segmentation_model(request: normal_synthesis_pb2.SynthesizeRequest, config: dict[str, Any]) -> common_pb2.ModelRef:
    """The segmenter to ask: the request's version if it names one, else the one the normal-synthesis
    model was trained with (its config's `segmentation_version`; absent: the Segmentation service's own)."""
    requested = request.segmentation_model
    version = requested.version or str(config.get("segmentation_version", ""))
    return common_pb2.ModelRef(name=requested.name, version=version)


class NormalSynthesisServicer:
    def __init__(self, settings: Settings, *, model_version: str = "latest") -> None:
        self.store = open_store(settings)
        self.limits = ImageLimits.from_settings(settings)
        self.models = ModelCache(
            ModelRegistry(self.store),
            MODEL_NAME,
            normal_synthesizer_from_weights,
            pinned=model_version,
            runner=triton_runner(settings),
        )

    def twin(
        self, model: torch.nn.Module, config: dict[str, Any], version: int, pixels: np.ndarray, anatomy: np.ndarray
    ) -> np.ndarray:
        """Healthy twin (H,W float32 in [0,1]) at the input's resolution, from a resolved model."""
        size = config["input_size"]
        height, width = pixels.shape
        image = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None]
        anatomy_low = torch.from_numpy(labels_to_size(anatomy, size, size).astype(np.int64))[None]
        with model_span(MODEL_NAME, version, height=height, width=width, batch_size=1), torch.inference_mode():
            twin = full_resolution_twin(lambda low: model(low, anatomy_low), image, size)
        return twin[0, 0].numpy()

    async def synthesize(
        self, request: normal_synthesis_pb2.SynthesizeRequest, metadata: Iterable[tuple[str, str]], segment: Segment
    ) -> normal_synthesis_pb2.SynthesizeResponse:
        with server_span("twinray.v1.NormalSynthesis/Synthesize", metadata):
            image = decode_image_message(request.image, self.limits, self.store)
            # The model first: unless the request overrides it, the anatomy comes from the segmenter
            # version this model was trained with (recorded in its config), not whatever is deployed.
            version, model, config = self.models.get(request.model.version, name=request.model.name)
            models = [common_pb2.ModelRef(name=MODEL_NAME, version=str(version))]
            if request.HasField("anatomy"):
                anatomy = anatomy_from_message(request.anatomy, image, self.limits)
            else:
                segmented = await segment(
                    segmentation_pb2.SegmentRequest(image=request.image, model=segmentation_model(request, config))
                )
                anatomy = decode_label_png(segmented.label_map.png, self.limits)
                models.extend(segmented.provenance.models)
            twin = self.twin(model, config, version, image.pixels, anatomy)
            residual = (image.pixels - twin).astype("<f4")
            return normal_synthesis_pb2.SynthesizeResponse(
                twin_png=encode_float01_png16(twin),
                residual=common_pb2.Tensor(shape=list(residual.shape), dtype=common_pb2.DTYPE_FLOAT32, data=residual.tobytes()),
                anatomy=anatomy_label_map(anatomy),
                provenance=common_pb2.Provenance(models=models, trace_id=current_trace_id()),
            )

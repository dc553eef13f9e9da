"""The Detect RPC as plain Python (no Ray): image -> the detector's input size -> what the detector
reads beside the image -> boxes on the input's pixel grid.

A residual detector must read what its training residuals hold (twinray.shared.synthesis.twin_residuals):
image - twin of the image AT THE DETECTOR'S INPUT SIZE S, by the twin model recorded with it
(services/detection/plan.py). So the image is resized once, here, and those S x S pixels go to the
NormalSynthesis service (which asks Segmentation for the anatomy) as a float32 tensor: nothing is
decoded twice and the twin sees what the residual writer saw. The raw translator has no service and
runs in-process; the anatomy detector asks the Segmentation service directly. Services are injected
async callables speaking their protobuf contracts (Serve handles in production, in-process servicers
in tests), and so is the detector forward, which the deployment batches across requests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Sequence

import numpy as np
import torch

from twinray.services.common.image_input import decode_image_message
from twinray.services.common.model_cache import ModelCache
from twinray.services.common.triton_runner import triton_runner
from twinray.services.detection.plan import GENERATOR, MODEL_NAME, TRANSLATOR, DetectorPlan, detector_plan
from twinray.services.detection.triton_detector import TritonDetector
from twinray.shared.data.phantoms.pathologies import PATHOLOGIES
from twinray.shared.models.components.twin import to_input_size
from twinray.shared.models.detection.network import LesionDetector, detect, detector_from_weights, detector_inputs
from twinray.shared.models.matching_pairs.network import translator_from_weights, translator_twin
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import FailedPrecondition, InvalidInput, NotFound
from twinray.shared.platform.imaging import ImageLimits, decode_label_png, encode_float01_png16
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import open_store
from twinray.shared.platform.telemetry import current_trace_id, model_span, server_span
from twinray.v1 import common_pb2, detection_pb2, normal_synthesis_pb2, segmentation_pb2

Synthesize = Callable[[normal_synthesis_pb2.SynthesizeRequest], Awaitable[normal_synthesis_pb2.SynthesizeResponse]]
Segment = Callable[[segmentation_pb2.SegmentRequest], Awaitable[segmentation_pb2.SegmentResponse]]
Detections = dict[str, torch.Tensor]  # "boxes" (K,4) xyxy px at S, "scores" (K,), "labels" (K,)
Forward = Callable[[int, torch.Tensor], Awaitable[Detections]]


@dataclasses.dataclass(frozen=True)
class Beside:
    """What the detector reads beside the image, and the models that made it."""

    residual: torch.Tensor | None = None  # (1,1,S,S) image - twin
    anatomy: torch.Tensor | None = None  # (1,S,S) int64 labels
    twin_png: bytes = b""
    models: tuple[common_pb2.ModelRef, ...] = ()


def float32_tensor(array: np.ndarray) -> common_pb2.Tensor:
    return common_pb2.Tensor(shape=list(array.shape), dtype=common_pb2.DTYPE_FLOAT32, data=array.astype("<f4").tobytes())


def lesion(box: list[float], score: float, label: int, spacing: tuple[float, float] | None) -> detection_pb2.Lesion:
    """One box (x0, y0, x1, y1 px of the input) as a Lesion, in mm too when the spacing is known."""
    x0, y0, x1, y1 = box
    row_mm, col_mm = spacing or (0.0, 0.0)
    return detection_pb2.Lesion(
        box=common_pb2.Box(x_min=x0, y_min=y0, x_max=x1, y_max=y1, score=score, label=PATHOLOGIES[label]),
        class_index=label,
        x_min_mm=x0 * col_mm,
        y_min_mm=y0 * row_mm,
        x_max_mm=x1 * col_mm,
        y_max_mm=y1 * row_mm,
        spacing_known=spacing is not None,
    )


def lesions(
    found: Detections, size: int, height: int, width: int, spacing: tuple[float, float] | None, min_score: float
) -> list[detection_pb2.Lesion]:
    """Detections at S x S as Lesions on the input's grid (a plain stretch back, as the image was
    stretched to S: x * width / S), highest score first, those under `min_score` left out."""
    limits = np.array([width, height, width, height], dtype=np.float64)
    boxes = np.clip(found["boxes"].numpy().astype(np.float64) * limits / size, 0, limits)
    scores, labels = found["scores"].numpy(), found["labels"].numpy()
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= min_score]
    return [lesion(boxes[i].tolist(), float(scores[i]), int(labels[i]), spacing) for i in order]


class DetectionServicer:
    def __init__(self, settings: Settings, *, model_version: str = "latest") -> None:
        self.store = open_store(settings)
        self.limits = ImageLimits.from_settings(settings)
        registry = ModelRegistry(self.store)
        runner, detector_runner = triton_runner(settings), triton_runner(settings, TritonDetector)
        self.models = ModelCache(registry, MODEL_NAME, detector_from_weights, pinned=model_version, runner=detector_runner)
        self.translators = ModelCache(registry, TRANSLATOR, translator_from_weights, capacity=1, runner=runner)
        self._plans: dict[int, DetectorPlan] = {}

    def detector(self, model: common_pb2.ModelRef) -> tuple[int, LesionDetector | TritonDetector, DetectorPlan]:
        """The requested (or pinned) detector and its plan; FAILED_PRECONDITION when none is published."""
        try:
            version, detector, _ = self.models.get(model.version, name=model.name)
        except NotFound:
            if not self.models.registry.versions(MODEL_NAME):
                raise FailedPrecondition(
                    "no detection model is published: train one with `twinray train detection --variant V`"
                ) from None
            raise
        if version not in self._plans:
            self._plans[version] = detector_plan(self.models.registry, version, detector.config)
        return version, detector, self._plans[version]

    def run_detector(self, batch: Sequence[tuple[int, torch.Tensor]]) -> list[Detections]:
        """Detections of stacked inputs (C,S,S), each for a detector version: one forward per version."""
        found: list[Detections] = [{} for _ in batch]
        for version in sorted({version for version, _ in batch}):
            rows = [i for i, (v, _) in enumerate(batch) if v == version]
            _, detector, _ = self.models.get(str(version))
            size = detector.config.input_size
            with model_span(MODEL_NAME, version, height=size, width=size, batch_size=len(rows)):
                answers = detect(detector, torch.stack([batch[i][1] for i in rows]), torch.device("cpu"), batch_size=len(rows))
            for row, answer in zip(rows, answers):
                found[row] = answer
        return found

    async def forward(self, version: int, inputs: torch.Tensor) -> Detections:
        """The detector forward in-process, one image at a time (the deployment batches instead)."""
        return self.run_detector([(version, inputs)])[0]

    async def beside(self, plan: DetectorPlan, pixels: torch.Tensor, synthesize: Synthesize, segment: Segment) -> Beside:
        """The residual (or anatomy map) of `pixels` (1,1,S,S) that detector `plan` reads."""
        image = common_pb2.Image(tensor=float32_tensor(pixels[0, 0].numpy()))
        if plan.twin == GENERATOR:
            answer = await synthesize(
                normal_synthesis_pb2.SynthesizeRequest(
                    image=image,
                    model=common_pb2.ModelRef(name=GENERATOR, version=str(plan.twin_version)),
                    segmentation_model=common_pb2.ModelRef(version=str(plan.segmentation_version or "")),
                )
            )
            residual = np.frombuffer(answer.residual.data, "<f4").reshape(tuple(answer.residual.shape)).copy()
            return Beside(torch.from_numpy(residual)[None, None], None, answer.twin_png, tuple(answer.provenance.models))
        if plan.twin == TRANSLATOR:
            version, translator, config = self.translators.get(str(plan.twin_version))
            size = pixels.shape[-1]
            with model_span(TRANSLATOR, version, height=size, width=size, batch_size=1), torch.no_grad():
                twin = translator_twin(translator, config["input_size"])(pixels)
            models = (common_pb2.ModelRef(name=TRANSLATOR, version=str(version)),)
            return Beside(pixels - twin, None, encode_float01_png16(twin[0, 0].numpy()), models)
        if plan.segmentation_version:
            answer = await segment(
                segmentation_pb2.SegmentRequest(image=image, model=common_pb2.ModelRef(version=str(plan.segmentation_version)))
            )
            labels = decode_label_png(answer.label_map.png, self.limits).astype(np.int64)
            return Beside(None, torch.from_numpy(labels)[None], b"", tuple(answer.provenance.models))
        return Beside()

    async def detect(
        self,
        request: detection_pb2.DetectRequest,
        metadata: Iterable[tuple[str, str]],
        *,
        synthesize: Synthesize,
        segment: Segment,
        forward: Forward | None = None,
    ) -> detection_pb2.DetectResponse:
        with server_span("twinray.v1.Detection/Detect", metadata):
            if request.HasField("min_score") and not 0.0 <= request.min_score <= 1.0:
                raise InvalidInput(f"min_score must be in [0, 1], got {request.min_score:g}")
            image = decode_image_message(request.image, self.limits, self.store)
            version, detector, plan = self.detector(request.model)
            if (request.include_residual or request.include_twin) and not plan.twin:
                raise FailedPrecondition(
                    f"detection version {version} ({plan.variant}) reads no twin, so it has no residual or twin to return: "
                    "ask NormalSynthesis/Synthesize for them"
                )
            size = detector.config.input_size
            pixels = to_input_size(torch.from_numpy(np.array(image.pixels, dtype=np.float32))[None, None], size)
            beside = await self.beside(plan, pixels, synthesize, segment)
            inputs = detector_inputs(detector.config, pixels, beside.residual, beside.anatomy)[0]
            found = await (forward or self.forward)(version, inputs)
            min_score = request.min_score if request.HasField("min_score") else plan.min_score
            response = detection_pb2.DetectResponse(
                lesions=lesions(found, size, image.height, image.width, image.spacing_mm, min_score),
                height=image.height,
                width=image.width,
                spacing=common_pb2.PixelSpacing(row_mm=image.spacing_mm[0], col_mm=image.spacing_mm[1])
                if image.spacing_mm
                else None,
                min_score=min_score,
                provenance=common_pb2.Provenance(
                    models=[common_pb2.ModelRef(name=MODEL_NAME, version=str(version)), *beside.models],
                    trace_id=current_trace_id(),
                ),
            )
            if request.include_residual:
                response.residual.CopyFrom(float32_tensor(beside.residual[0, 0].numpy()))
            if request.include_twin:
                response.twin_png = beside.twin_png
            return response

"""The detector on Triton: Triton runs its network (normalise, backbone, head: the exported
`DetectorCore`), this process decodes boxes (anchors, score threshold, NMS) with the module's own
post-processing. Why split: that decoding loops per image with data-dependent shapes and does not
export soundly to ONNX with a dynamic batch; the split leaves the answer unchanged."""

from __future__ import annotations

from typing import Any

import torch

from twinray.services.common.triton_runner import TritonEndpoint, TritonModule
from twinray.shared.models.detection.head_outputs import detections_from_head, detector_skeleton
from twinray.shared.models.detection.network import DetectorConfig


class TritonDetector:
    """Stands where a LesionDetector in eval mode stood for `detect()`: a list of (C,S,S) inputs in,
    one dict of "boxes", "scores", "labels" per input out."""

    def __init__(self, endpoint: TritonEndpoint, name: str, version: int, config: dict[str, Any]) -> None:
        self.config = DetectorConfig.from_dict(config)
        self.network = TritonModule(endpoint, name, version, config)
        self.skeleton = detector_skeleton(self.config)  # no weights: anchors and post-processing only

    def eval(self) -> TritonDetector:
        return self

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        inputs = torch.stack(images)
        cls_logits, bbox_regression = self.network(inputs)
        return detections_from_head(self.skeleton, inputs, cls_logits, bbox_regression)

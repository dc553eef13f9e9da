"""The detector split where its tensors stop being fixed-shape: network (normalise, backbone, head)
and decoding (anchors, box decoding, score threshold, NMS).

Why: torchvision's RetinaNet forward takes a list of images and loops per image with data-dependent
shapes (top-k, NMS), which does not export soundly to ONNX with a dynamic batch. `DetectorCore` is
tensors-in/tensors-out and exports; `detections_from_head` turns its outputs into the same answer
RetinaNet.forward gives, with the module's own anchor generator and post-processing, so a
detector served remotely (Triton) decodes exactly as the in-process one does.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from twinray.shared.models.detection.network import DetectorConfig, LesionDetector, input_channels


class DetectorCore(nn.Module):
    """Stacked inputs (N, C, S, S) -> (cls_logits (N, A, K), bbox_regression (N, A, 4)), A anchors
    over all pyramid levels: RetinaNet's transform (normalise only; S is already its size), backbone
    and head."""

    def __init__(self, model: LesionDetector) -> None:
        super().__init__()
        self.backbone, self.head = model.backbone, model.head
        self.register_buffer("mean", torch.tensor(model.transform.image_mean)[None, :, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(model.transform.image_std)[None, :, None, None], persistent=False)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = list(self.backbone((inputs - self.mean) / self.std).values())
        outputs = self.head(features)
        return outputs["cls_logits"], outputs["bbox_regression"]


def detector_skeleton(config: DetectorConfig) -> LesionDetector:
    """A detector without weights (on the meta device): its anchor generator, transform and
    post-processing hold no parameters, so this is all decoding needs."""
    with torch.device("meta"):
        return LesionDetector(config).eval()


@functools.lru_cache(maxsize=16)
def _level_sizes(config: DetectorConfig, height: int, width: int) -> tuple[tuple[int, int], ...]:
    """Each pyramid level's grid for an input of height x width (computed on the meta device)."""
    skeleton = detector_skeleton(config)
    features = skeleton.backbone(torch.empty(1, input_channels(config), height, width, device="meta"))
    return tuple((int(f.shape[-2]), int(f.shape[-1])) for f in features.values())


@torch.no_grad()
def detections_from_head(
    skeleton: LesionDetector, inputs: torch.Tensor, cls_logits: torch.Tensor, bbox_regression: torch.Tensor
) -> list[dict[str, torch.Tensor]]:
    """RetinaNet's eval-mode answer (one dict of "boxes", "scores", "labels" per image) from the head
    outputs of stacked `inputs` (N, C, S, S); the steps of torchvision's RetinaNet.forward after the head."""
    images, _ = skeleton.transform(list(inputs))
    sizes = _level_sizes(skeleton.config, *images.tensors.shape[-2:])
    shapes_only = [torch.empty(len(inputs), 0, h, w) for h, w in sizes]
    anchors = skeleton.anchor_generator(images, shapes_only)
    per_level = [h * w for h, w in sizes]
    if cls_logits.shape[1] % sum(per_level):
        raise ValueError(f"head outputs hold {cls_logits.shape[1]} anchors, not a multiple of the {sum(per_level)} grid cells")
    per_level = [cells * (cls_logits.shape[1] // sum(per_level)) for cells in per_level]
    head = {
        "cls_logits": list(cls_logits.split(per_level, dim=1)),
        "bbox_regression": list(bbox_regression.split(per_level, dim=1)),
    }
    split_anchors = [list(a.split(per_level)) for a in anchors]
    found = skeleton.postprocess_detections(head, split_anchors, images.image_sizes)
    return skeleton.transform.postprocess(found, images.image_sizes, [tuple(image.shape[-2:]) for image in inputs])

"""Box-level yardsticks of a lesion detector, for the detector ablation: the RSNA Pneumonia Detection
Challenge score (per-image TP / (TP + FP + FN) averaged over IoU thresholds 0.40-0.75, then over
images), so results read against the challenge's, and the dataset-level average precision (AP) that
detection papers report, at single IoU thresholds and averaged over the RSNA ones.

Boxes are float tensors (K,4) in pixel corner coordinates (x1, y1, x2, y2); IoU is torchvision's
`box_iou`, computed in float64 so that an IoU equal to a threshold compares exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.ops import box_iou

# 0.40, 0.45, ..., 0.75 built from integers, so floating error cannot drop or shift the last one.
IOU_THRESHOLDS: tuple[float, ...] = tuple(step / 100 for step in range(40, 80, 5))

# The confidence thresholds a detector's RSNA score is read at (chosen on val): 0.05, 0.10, ..., 0.95.
CONFIDENCE_THRESHOLDS: tuple[float, ...] = tuple(step / 100 for step in range(5, 100, 5))

ImageBoxes = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _checked(pred_boxes: torch.Tensor, pred_scores: torch.Tensor, true_boxes: torch.Tensor) -> ImageBoxes:
    """The inputs of one image as float64 on the CPU, predictions in descending confidence order (stable)."""
    pred_boxes, pred_scores, true_boxes = (
        torch.as_tensor(x, dtype=torch.float64, device="cpu") for x in (pred_boxes, pred_scores, true_boxes)
    )
    for name, boxes in (("pred_boxes", pred_boxes), ("true_boxes", true_boxes)):
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"{name} must have shape (K, 4), got {tuple(boxes.shape)}; pass torch.zeros(0, 4) for no box")
        if not torch.isfinite(boxes).all():
            raise ValueError(f"{name} holds NaN or infinite coordinates")
        if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
            raise ValueError(f"{name} must be corner boxes (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1")
    if pred_scores.shape != (len(pred_boxes),):
        raise ValueError(
            f"pred_scores must have shape ({len(pred_boxes)},), one per predicted box, got {tuple(pred_scores.shape)}"
        )
    if not torch.isfinite(pred_scores).all():
        raise ValueError("pred_scores holds NaN or infinite scores")
    order = torch.sort(pred_scores, descending=True, stable=True).indices
    return pred_boxes[order], pred_scores[order], true_boxes


def _checked_images(images: Sequence[ImageBoxes]) -> list[ImageBoxes]:
    """Every image checked as by `_checked`, an error naming the image it comes from."""
    checked = []
    for index, image in enumerate(images):
        try:
            checked.append(_checked(*image))
        except ValueError as error:
            raise ValueError(f"image {index}: {error}") from None
    return checked


def _matched(pred_boxes: torch.Tensor, true_boxes: torch.Tensor, threshold: float, *, strict: bool) -> torch.Tensor:
    """Which predictions (rows, in confidence order) take a true box: each takes the still-unmatched true
    box of highest IoU, if that IoU is > threshold (`strict`) or >= threshold."""
    matched = torch.zeros(len(pred_boxes), dtype=torch.bool)
    if not len(true_boxes):
        return matched
    taken = torch.zeros(len(true_boxes), dtype=torch.bool)
    for row, overlaps in enumerate(box_iou(pred_boxes, true_boxes)):
        best = int(overlaps.masked_fill(taken, -1.0).argmax())
        iou = float(overlaps[best])
        if not taken[best] and (iou > threshold if strict else iou >= threshold):
            taken[best] = matched[row] = True
    return matched


def rsna_image_score(
    pred_boxes: torch.Tensor,
    pred_scores: torch.Tensor,
    true_boxes: torch.Tensor,
    thresholds: Sequence[float] = IOU_THRESHOLDS,
) -> float | None:
    """The RSNA challenge score of one image: the mean over IoU thresholds t of TP / (TP + FP + FN), where
    predictions, in descending confidence, each take the unmatched true box of highest IoU if IoU > t.

    Strictly greater, as the challenge's evaluation page states ("IoU greater than the threshold"); the
    widely copied community kernel uses >=, which differs only when an IoU equals a threshold exactly.
    No true box: 0.0 if anything is predicted, None (left out of the mean) if nothing is."""
    pred_boxes, _, true_boxes = _checked(pred_boxes, pred_scores, true_boxes)
    if not len(true_boxes):
        return 0.0 if len(pred_boxes) else None
    total = len(pred_boxes) + len(true_boxes)  # TP + FP + FN = predictions + true boxes - TP
    scores = []
    for threshold in thresholds:
        tp = int(_matched(pred_boxes, true_boxes, threshold, strict=True).sum())
        scores.append(tp / (total - tp))
    return sum(scores) / len(scores)


def rsna_score(images: Sequence[ImageBoxes]) -> float:
    """The RSNA challenge score of a dataset: the mean `rsna_image_score` over (pred_boxes, pred_scores,
    true_boxes) images, leaving out those with neither a true nor a predicted box (NaN if all are)."""
    scores = [rsna_image_score(*image) for image in _checked_images(images)]
    kept = [score for score in scores if score is not None]
    return sum(kept) / len(kept) if kept else math.nan


def kept_at(images: Sequence[ImageBoxes], threshold: float) -> list[ImageBoxes]:
    """The images with only their predictions of confidence >= `threshold`."""
    return [(boxes[scores >= threshold], scores[scores >= threshold], truth) for boxes, scores, truth in images]


def best_threshold_rsna(images: Sequence[ImageBoxes], thresholds: Sequence[float] = CONFIDENCE_THRESHOLDS) -> tuple[float, float]:
    """The best `rsna_score` of the images' predictions kept at confidence >= t over `thresholds`, and
    that t (the lowest, on a tie). The challenge's score punishes every false box, so a detector is
    read at the confidence threshold chosen on val; NaN and the lowest threshold when no image counts."""
    checked = _checked_images(images)
    best = (math.nan, thresholds[0])
    for threshold in thresholds:
        score = rsna_score(kept_at(checked, threshold))
        if not math.isnan(score) and (math.isnan(best[0]) or score > best[0]):
            best = (score, threshold)
    return best


def average_precision(images: Sequence[ImageBoxes], iou_threshold: float) -> float:
    """AP of one class at one IoU threshold over (pred_boxes, pred_scores, true_boxes) images.

    In each image, predictions in descending confidence take the unmatched true box of highest IoU if
    IoU >= threshold (COCO's rule). All predictions are then ranked by score (stable, ties in image
    order) into one precision/recall curve; its precision envelope (the best precision at any higher
    recall) is integrated over recall at every point, as PASCAL VOC 2010+. NaN without true boxes."""
    checked = _checked_images(images)
    positives = sum(len(true_boxes) for _, _, true_boxes in checked)
    if not positives:
        return math.nan
    hits = [_matched(pred_boxes, true_boxes, iou_threshold, strict=False) for pred_boxes, _, true_boxes in checked]
    scores = torch.cat([scores for _, scores, _ in checked])
    ranked = torch.cat(hits)[torch.sort(scores, descending=True, stable=True).indices].double()
    true_positives = ranked.cumsum(0)
    precision = true_positives / torch.arange(1, len(ranked) + 1)
    envelope = precision.flip(0).cummax(0).values.flip(0)
    recall_gain = ranked / positives  # recall rises by 1/positives at each true positive
    return float((recall_gain * envelope).sum())


def detection_metrics(images: Sequence[ImageBoxes]) -> dict[str, float]:
    """The detector row: RSNA score, AP at IoU 0.40, 0.50 and 0.60, and `map`, AP averaged over IOU_THRESHOLDS."""
    checked = _checked_images(images)
    ap = {threshold: average_precision(checked, threshold) for threshold in IOU_THRESHOLDS}
    return {
        "rsna_score": rsna_score(checked),
        "ap40": ap[0.40],
        "ap50": ap[0.50],
        "ap60": ap[0.60],
        "map": sum(ap.values()) / len(ap),
    }


LabelledImageBoxes = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def per_class_map(images: Sequence[LabelledImageBoxes], classes: Sequence[str]) -> dict[str, float]:
    """`map/<class>` for every class: AP averaged over IOU_THRESHOLDS of that class's predictions
    against that class's true boxes, over (pred_boxes, pred_scores, pred_labels, true_boxes,
    true_labels) images, a label being an index into `classes` (NaN for a class with no true box)."""
    out = {}
    for index, name in enumerate(classes):
        of_class = [
            (pred_boxes[pred_labels == index], pred_scores[pred_labels == index], true_boxes[true_labels == index])
            for pred_boxes, pred_scores, pred_labels, true_boxes, true_labels in images
        ]
        ap = [average_precision(of_class, threshold) for threshold in IOU_THRESHOLDS]
        out[f"map/{name}"] = sum(ap) / len(ap)
    return out

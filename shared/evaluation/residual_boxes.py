"""The no-learning row of the detector ablation: boxes straight from the twin residual.

Why: a detector that reads the residual must beat simply boxing where the residual is large, or the
detector adds nothing to the twin. The residual magnitude, smoothed (Gaussian, 2 px), is
thresholded; each connected region of at least `min_pixels` becomes a box, scored by its peak
magnitude (clipped to [0, 1], the unit intensity range the residual is in). The threshold and the
region size are chosen on val by the RSNA score, as a detector's confidence threshold is.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from twinray.shared.evaluation.detection_metrics import best_threshold_rsna

SMOOTHING_PX = 2.0
THRESHOLDS: tuple[float, ...] = (0.005, 0.01, 0.02, 0.03, 0.05, 0.08)
MIN_PIXELS: tuple[int, ...] = (4, 16, 64)


def residual_boxes(residual: np.ndarray, threshold: float, min_pixels: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(boxes (K,4) xyxy px, scores (K,)) per image of signed residuals (N, S, S)."""
    if residual.ndim != 3:
        raise ValueError(f"residual must be (N, S, S), got shape {residual.shape}")
    found = []
    for image in residual:
        magnitude = ndimage.gaussian_filter(np.abs(image.astype(np.float32)), SMOOTHING_PX)
        labels, count = ndimage.label(magnitude >= threshold)
        boxes, scores = [], []
        for index, region in enumerate(ndimage.find_objects(labels), start=1):
            inside = labels[region] == index
            if inside.sum() < min_pixels:
                continue
            rows, cols = region
            boxes.append([cols.start, rows.start, cols.stop, rows.stop])
            scores.append(min(float(magnitude[region][inside].max()), 1.0))
        found.append((torch.tensor(boxes, dtype=torch.float32).view(-1, 4), torch.tensor(scores, dtype=torch.float32)))
    return found


def choose_on_val(residual: np.ndarray, true_boxes: Sequence[torch.Tensor]) -> dict[str, float]:
    """The threshold, region size and confidence threshold of the best val RSNA score, and that score."""
    best: dict[str, float] = {}
    for threshold, min_pixels in itertools.product(THRESHOLDS, MIN_PIXELS):
        found = residual_boxes(residual, threshold, min_pixels)
        score, confidence = best_threshold_rsna([(b, s, t) for (b, s), t in zip(found, true_boxes)])
        if not best or score > best["val_rsna_score"]:
            best = {"threshold": threshold, "min_pixels": min_pixels, "score_threshold": confidence, "val_rsna_score": score}
    return best

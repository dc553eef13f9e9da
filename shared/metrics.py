"""Segmentation metrics (MONAI's Dice), summarised per class the way reports quote them."""
from __future__ import annotations

import torch
from monai.metrics import compute_dice
from monai.networks.utils import one_hot


def per_image_class_dice(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Dice per image and foreground class, shape (N, C-1); NaN where a class is absent in both."""
    pred_1h = one_hot(pred.unsqueeze(1).long(), num_classes)
    target_1h = one_hot(target.unsqueeze(1).long(), num_classes)
    return compute_dice(pred_1h, target_1h, include_background=False, ignore_empty=True)


def summarise_dice(dice: torch.Tensor, class_names: tuple[str, ...]) -> dict:
    """{"mean_dice": mean over foreground classes, "per_class": {name: mean over images}}."""
    per_class = torch.nanmean(dice, dim=0)
    names = class_names[1:]
    return {
        "mean_dice": float(torch.nanmean(per_class)),
        "per_class": {name: round(float(value), 4) for name, value in zip(names, per_class)},
    }

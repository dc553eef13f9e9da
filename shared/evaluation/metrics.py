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


def twin_similarity(twin: torch.Tensor, true_twin: torch.Tensor, lesion_mask: torch.Tensor) -> dict[str, float]:
    """SSIM and PSNR (data range 1) of twins (N,1,H,W) to the true twins, over the whole image and
    outside the lesions (the part a twin must leave untouched). Means over images."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _, ssim_map = structural_similarity_index_measure(twin, true_twin, data_range=1.0, return_full_image=True, reduction="none")
    outside = (~lesion_mask.bool())[:, None].float()
    squared = (twin - true_twin).square()
    mse = squared.flatten(1).mean(dim=1)
    mse_outside = (squared * outside).flatten(1).sum(dim=1) / outside.flatten(1).sum(dim=1).clamp_min(1.0)
    return {
        "ssim": float(ssim_map.flatten(1).mean(dim=1).mean()),
        "ssim_outside_lesion": float(
            ((ssim_map * outside).flatten(1).sum(dim=1) / outside.flatten(1).sum(dim=1).clamp_min(1.0)).mean()
        ),
        "psnr": float((10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean()),
        "psnr_outside_lesion": float((10 * torch.log10(1.0 / mse_outside.clamp_min(1e-10))).mean()),
    }


def residual_localisation(image: torch.Tensor, twin: torch.Tensor, lesion_mask: torch.Tensor) -> dict[str, float]:
    """Does the residual |image - twin| (N,1,H,W) point at the true lesions (N,H,W bool)?

    `residual_in_lesion`: the fraction of residual energy (sum of squares) inside the lesion mask,
    per image, averaged (a twin that changes nothing scores 0; darkening everything a little scores
    about the lesions' area fraction). `residual_auroc`: pixel-wise AUROC of the residual as a
    lesion score over all pixels (0.5 = no better than chance). Pass abnormal images only.
    """
    from torchmetrics.functional.classification import binary_auroc

    residual = (image - twin).abs()[:, 0].float()
    energy = residual.square().flatten(1)
    mask = lesion_mask.bool().flatten(1)
    in_lesion = (energy * mask).sum(dim=1) / energy.sum(dim=1).clamp_min(1e-12)
    return {
        "residual_in_lesion": float(in_lesion.mean()),
        "residual_auroc": float(binary_auroc(residual.flatten(), mask.flatten().long())),
    }

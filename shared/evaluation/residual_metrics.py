"""The healthy-twin yardstick on phantoms with lesion labels, a lung mask and pathology classes: where a
residual (or any score map) points, measured inside the lung fields where disease is looked for, and what
a twin removes (lesion recall) next to what it changes elsewhere (false change), overall and per class.

A twin's score map is |image - twin|: density loss (pneumothorax, darker than its twin) counts as much as
added density. Localisation pools the pixels of all images (one ranking, so a score must mean the same in
every image); its AUPRC is read against `lesion_share`, what a random score gets.
"""

from __future__ import annotations

import math

import torch
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

from twinray.shared.evaluation.metrics import twin_similarity

NAN = math.nan


def ranking(score: torch.Tensor, positive: torch.Tensor) -> dict[str, float]:
    """Exact pooled AUROC and AUPRC of scores (1-D) for positives (1-D bool); NaN when one side is empty."""
    positives = int(positive.sum())
    share = positives / positive.numel() if positive.numel() else NAN
    if not 0 < positives < positive.numel():
        return {"auroc": NAN, "auprc": NAN, "lesion_share": share}
    target = positive.long()
    return {
        "auroc": float(binary_auroc(score, target, thresholds=None)),
        "auprc": float(binary_average_precision(score, target, thresholds=None)),
        "lesion_share": share,
    }


def localisation(
    score: torch.Tensor, lesion_mask: torch.Tensor, lung_mask: torch.Tensor, exclude: torch.Tensor | None = None
) -> dict[str, float]:
    """How well a score map (N,1,H,W) ranks lesion pixels (N,H,W, nonzero = lesion) above the rest, pooled
    over images: inside the lung fields (`*_in_lung`, where lesions are looked for, so the easy pixels
    outside the lungs do not inflate it) and over the whole image. Pixels in `exclude` (N,H,W bool) count
    as neither. `lesion_inside_lung` is the fraction of lesion pixels the lung mask covers: lesion pixels
    outside it are absent from the in-lung metrics."""
    score = score[:, 0].float()
    lesion = lesion_mask.bool()
    keep = torch.ones_like(lesion) if exclude is None else ~exclude.bool()
    in_lung = keep & lung_mask.bool()
    scores = {f"{key}_in_lung": value for key, value in ranking(score[in_lung], lesion[in_lung]).items()}
    lesion_pixels = (lesion & keep).sum()
    scores["lesion_inside_lung"] = float((lesion & in_lung).sum() / lesion_pixels) if lesion_pixels else NAN
    return {**scores, **ranking(score[keep], lesion[keep])}


def lesion_recall(image: torch.Tensor, twin: torch.Tensor, true_twin: torch.Tensor, lesion_mask: torch.Tensor) -> float:
    """The share of the disease the twin removes, 1 - sum|twin - true twin| / sum|image - true twin|,
    summed over the lesion pixels of all images (1 = all removed, 0 = left, < 0 = made worse; NaN when
    the lesions change nothing). Pooled, so a faint lesion weighs by the change it makes, not as a whole
    image. Unsigned, so density loss counts like added density."""
    lesion = lesion_mask.bool()[:, None]
    disease = float(((image - true_twin).abs() * lesion).sum())
    if disease == 0:
        return NAN
    return 1.0 - float(((twin - true_twin).abs() * lesion).sum()) / disease


def false_change(
    twin: torch.Tensor, true_twin: torch.Tensor, lesion_mask: torch.Tensor, lung_mask: torch.Tensor
) -> dict[str, float]:
    """Mean |twin - true twin| over the pixels a twin must leave alone (outside the lesions), pooled over
    images: inside the lung fields, where a false change reads as a false finding, and over the image."""
    change = (twin - true_twin).abs()[:, 0]
    healthy = ~lesion_mask.bool()
    in_lung = healthy & lung_mask.bool()
    return {
        "false_change_in_lung": float(change[in_lung].mean()) if in_lung.any() else NAN,
        "false_change": float(change[healthy].mean()) if healthy.any() else NAN,
    }


def identity_change(normal_image: torch.Tensor, normal_twin: torch.Tensor) -> float:
    """Mean |twin - image| on normal images: a twin model must leave a healthy patient alone."""
    return float((normal_twin - normal_image).abs().mean())


def pixel_classes(lesion_labels: torch.Tensor, lesion_class: torch.Tensor) -> torch.Tensor:
    """The class of every pixel (N,H,W), -1 outside the lesions, from lesion labels and each lesion's class."""
    background = torch.full_like(lesion_class[:, :1], -1)
    classes = torch.cat([background, lesion_class], dim=1)
    return classes.gather(1, lesion_labels.flatten(1)).view_as(lesion_labels)


def per_class(
    score: torch.Tensor,
    lesion_labels: torch.Tensor,
    lesion_class: torch.Tensor,
    lung_mask: torch.Tensor,
    class_names: tuple[str, ...],
    *,
    image: torch.Tensor | None = None,
    twin: torch.Tensor | None = None,
    true_twin: torch.Tensor | None = None,
) -> dict[str, dict[str, float]]:
    """Localisation (and, given the twins, lesion recall) per pathology class, so one easy class cannot hide
    another. For class c: only the images with class-c lesion pixels (`images` counts them); positives are
    class-c pixels; other classes' lesion pixels are neither positives nor negatives (a score is not
    punished for finding another disease). The lung mask only restricts the `*_in_lung` metrics to the
    lung fields, as in `localisation`. Classes absent from the batch score NaN."""
    classes = pixel_classes(lesion_labels, lesion_class)
    results = {}
    for index, name in enumerate(class_names):
        mask = classes == index
        has = mask.flatten(1).any(dim=1)
        other = (classes >= 0) & ~mask
        metrics = {"images": float(has.sum()), **localisation(score[has], mask[has], lung_mask[has], exclude=other[has])}
        if twin is not None:
            metrics["lesion_recall"] = lesion_recall(image[has], twin[has], true_twin[has], mask[has]) if has.any() else NAN
        results[name] = metrics
    return results


def flat(by_class: dict[str, dict[str, float]]) -> dict[str, float]:
    """Per-class metrics as flat report keys, f"{metric}/{class_name}"."""
    return {f"{metric}/{name}": value for name, metrics in by_class.items() for metric, value in metrics.items()}


def score_map(
    score: torch.Tensor,
    lesion_labels: torch.Tensor,
    lesion_class: torch.Tensor,
    lung_mask: torch.Tensor,
    class_names: tuple[str, ...],
) -> dict[str, float]:
    """A row that only has a score map on the abnormal images (a no-learning baseline): localisation overall
    and per class."""
    return {
        **localisation(score, lesion_labels > 0, lung_mask),
        **flat(per_class(score, lesion_labels, lesion_class, lung_mask, class_names)),
    }


def score_twin(
    image: torch.Tensor,
    twin: torch.Tensor,
    true_twin: torch.Tensor,
    lesion_labels: torch.Tensor,
    lesion_class: torch.Tensor,
    lung_mask: torch.Tensor,
    normal_image: torch.Tensor,
    normal_twin: torch.Tensor,
    class_names: tuple[str, ...],
) -> dict[str, float]:
    """A twin row: similarity to the true twin, localisation of |image - twin|, lesion recall and false
    change on the abnormal images, identity change on the normal ones; localisation and recall per class."""
    lesion = lesion_labels > 0
    residual = (image - twin).abs()
    by_class = per_class(
        residual, lesion_labels, lesion_class, lung_mask, class_names, image=image, twin=twin, true_twin=true_twin
    )
    return {
        **twin_similarity(twin, true_twin, lesion),
        **localisation(residual, lesion, lung_mask),
        "lesion_recall": lesion_recall(image, twin, true_twin, lesion),
        **false_change(twin, true_twin, lesion, lung_mask),
        "identity_change": identity_change(normal_image, normal_twin),
        **flat(by_class),
    }

"""Yardsticks of synthetic product defects: how well a defect segmenter finds held-out defects (IoU of
the defect class, pixel AUROC), how real synthetic defects look (KID) and how varied they are.

No pretrained network can be downloaded here, so neither Inception (KID's usual features) nor LPIPS'
VGG/AlexNet is available. Both realism and diversity are therefore measured in the feature space of a
small CNN trained inside the project to tell real defect crops from normal surface crops
(`CropClassifier`; trained by twinray.shared.evaluation.defect_augmentation): KID is torchmetrics'
`KernelInceptionDistance` with that network as its custom feature extractor, and diversity is the
mean pairwise distance between unit-normalised features of the same network (LPIPS is also a
distance in a learned feature space) plus a model-free second opinion, 1 - mean pairwise SSIM of the
crops (MS-SSIM needs crops of 160+ px; defect crops are 16-64 px).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# --- segmentation of the defect class ------------------------------------------------------------


def defect_segmentation_scores(probability: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> dict[str, float]:
    """Scores of defect probabilities (N,H,W) in [0,1] against true masks (N,H,W) bool.

    `iou`: TP / (TP + FP + FN) of the defect class over all pixels of all images (normal ones
    included, so false alarms on normal parts count). `mean_image_iou`: IoU per image, averaged over
    the images that hold a defect (IoU is undefined where both are empty). `pixel_auroc`: AUROC of the
    probability as a defect score over all pixels (torchmetrics). `normal_false_alarm_rate`: the
    fraction of defect-free images with at least one predicted defect pixel (NaN if there are none).
    """
    from torchmetrics.functional.classification import binary_auroc

    if probability.shape != target.shape or probability.ndim != 3:
        raise ValueError(
            f"expected probabilities and masks of one shape (N, H, W), got {tuple(probability.shape)} and {tuple(target.shape)}"
        )
    target = target.bool()
    predicted = probability > threshold
    tp = (predicted & target).flatten(1).sum(1).double()
    fp = (predicted & ~target).flatten(1).sum(1).double()
    fn = (~predicted & target).flatten(1).sum(1).double()
    has_defect = target.flatten(1).any(1)
    union = tp.sum() + fp.sum() + fn.sum()
    per_image = tp[has_defect] / (tp + fp + fn)[has_defect]
    normal = ~has_defect
    both_classes = target.any() and not target.all()
    return {
        "iou": float(tp.sum() / union) if union > 0 else float("nan"),
        "mean_image_iou": float(per_image.mean()) if len(per_image) else float("nan"),
        "pixel_auroc": float(binary_auroc(probability.flatten().float(), target.flatten().long()))
        if both_classes
        else float("nan"),
        "normal_false_alarm_rate": float(predicted[normal].flatten(1).any(1).double().mean()) if normal.any() else float("nan"),
    }


# --- crops around defects ---------------------------------------------------------------------------


def defect_crops(images: np.ndarray | torch.Tensor, masks: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """(N,1,size,size) crops of images (N,H,W) centred on each mask's bounding box (shifted to stay
    inside the image); an empty mask gives the central crop."""
    images, masks = torch.as_tensor(np.asarray(images, dtype=np.float32)), torch.as_tensor(np.asarray(masks, dtype=bool))
    height, width = images.shape[-2:]
    if not 1 <= size <= min(height, width):
        raise ValueError(f"crop size {size} must be in [1, {min(height, width)}]")
    crops = []
    for image, mask in zip(images, masks):
        rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
        cy = (int(rows[0]) + int(rows[-1]) + 1) // 2 if len(rows) else height // 2
        cx = (int(cols[0]) + int(cols[-1]) + 1) // 2 if len(cols) else width // 2
        top = min(max(cy - size // 2, 0), height - size)
        left = min(max(cx - size // 2, 0), width - size)
        crops.append(image[top : top + size, left : left + size])
    return torch.stack(crops)[:, None]


def random_crops(images: np.ndarray | torch.Tensor, size: int, count: int, seed: int) -> torch.Tensor:
    """`count` (N,1,size,size) crops at seeded random places of random images (N,H,W)."""
    images = torch.as_tensor(np.asarray(images, dtype=np.float32))
    generator = torch.Generator().manual_seed(seed)
    height, width = images.shape[-2:]
    picks = torch.randint(len(images), (count,), generator=generator).tolist()
    tops = torch.randint(height - size + 1, (count,), generator=generator).tolist()
    lefts = torch.randint(width - size + 1, (count,), generator=generator).tolist()
    return torch.stack([images[i, top : top + size, left : left + size] for i, top, left in zip(picks, tops, lefts)])[:, None]


# --- the project's own feature network ------------------------------------------------------------


class CropClassifier(nn.Module):
    """Crop (N,1,s,s) in [0,1] -> logit of "real defect" (N,); `features` gives the (N, d) vector
    before the last linear layer (global average of the last convolution block). Each crop is
    standardised first, as the segmenter does, so features describe shape and texture, not exposure."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = 1
        for index, width in enumerate(channels):
            stride = 1 if index == 0 else 2
            layers += [
                nn.Conv2d(previous, width, 3, stride=stride, padding=1),
                nn.GroupNorm(math.gcd(width, 8), width),
                nn.SiLU(),
            ]
            previous = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(previous, 1)
        self.feature_size = previous

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        mean = crops.mean(dim=(2, 3), keepdim=True)
        std = crops.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
        return self.body((crops - mean) / std).mean(dim=(2, 3))

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(crops)).squeeze(1)


class FeatureExtractor(nn.Module):
    """`CropClassifier.features` as a module, for torchmetrics' custom-feature KID: (N,1,s,s) -> (N,d)."""

    def __init__(self, classifier: CropClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    @torch.no_grad()
    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(crops.float())


# --- realism and diversity -------------------------------------------------------------------------


def kernel_inception_distance(
    extractor: nn.Module, real: torch.Tensor, fake: torch.Tensor, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> dict[str, float]:
    """KID (Binkowski et al. 2018; torchmetrics, polynomial kernel) between crops `real` and `fake`
    (N,1,s,s), in the features of `extractor`. The subset size is capped by the smaller set (at least
    2 crops each); the subsets are drawn under `seed`, so the value is reproducible."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError(f"KID needs at least 2 real and 2 synthetic crops, got {len(real)} and {len(fake)}")
    with warnings.catch_warnings():  # "will save all extracted features in buffer": they are few here
        warnings.filterwarnings("ignore", message=".*extracted features in buffer")
        metric = KernelInceptionDistance(feature=extractor.eval(), subsets=subsets, subset_size=size)
    metric.update(real.float(), real=True)
    metric.update(fake.float(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return {"kid_mean": float(mean), "kid_std": float(std), "subset_size": size, "subsets": subsets}


def _pairs(count: int, max_pairs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    first, second = torch.triu_indices(count, count, offset=1)
    if len(first) > max_pairs:
        keep = torch.randperm(len(first), generator=torch.Generator().manual_seed(seed))[:max_pairs]
        first, second = first[keep], second[keep]
    return first, second


def feature_diversity(features: torch.Tensor, *, max_pairs: int = 20000, seed: int = 0) -> float:
    """Mean pairwise Euclidean distance between unit-normalised feature vectors (N,d): 0 for copies of
    one sample, up to 2 for opposite directions (the LPIPS recipe without the calibrated weights)."""
    if len(features) < 2:
        raise ValueError("diversity needs at least 2 samples")
    unit = F.normalize(features.float(), dim=1)
    first, second = _pairs(len(unit), max_pairs, seed)
    return float((unit[first] - unit[second]).norm(dim=1).mean())


def ssim_diversity(crops: torch.Tensor, *, max_pairs: int = 2000, seed: int = 0, batch: int = 256) -> float:
    """1 - mean pairwise SSIM (torchmetrics, data range 1, 7 px Gaussian window capped by the crop) of
    crops (N,1,s,s): 0 for copies of one crop, larger for more varied ones."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    if len(crops) < 2:
        raise ValueError("diversity needs at least 2 samples")
    kernel = min(7, crops.shape[-1] - (1 - crops.shape[-1] % 2))  # odd, no larger than the crop
    first, second = _pairs(len(crops), max_pairs, seed)
    values = []
    for start in range(0, len(first), batch):
        a, b = crops[first[start : start + batch]].float(), crops[second[start : start + batch]].float()
        values.append(structural_similarity_index_measure(a, b, data_range=1.0, kernel_size=kernel, reduction="none"))
    return float(1.0 - torch.cat(values).mean())

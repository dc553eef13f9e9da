"""The no-learning baselines a sceptic asks for first: score maps made from the image and its lung mask
alone, scored like a twin's residual (`twinray.shared.evaluation.residual_metrics.score_map`). If lung
brightness or a local-contrast filter finds the lesions as well as a twin does, the phantom is too easy or
the twin adds nothing."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from twinray.shared.evaluation.residual_metrics import localisation

# (image (N,1,H,W) in [0,1], lung mask (N,H,W) bool) -> score map (N,1,H,W), higher = more likely lesion.
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def lung_intensity(image: torch.Tensor, lung_mask: torch.Tensor) -> torch.Tensor:
    """The image inside the lungs, 0 outside: added density is brighter, so brightness is the first guess."""
    return image * lung_mask.bool()[:, None]


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N,1,H,W) with reflect padding (torchvision convolves the whole 2-D kernel,
    slow at the large sigmas of the grid); the kernel is cut at 3 sigma or at the image's size."""
    radius = min(math.ceil(3 * sigma), min(image.shape[-2:]) - 1)
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-offsets.square() / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    padded = F.pad(image, (radius, radius, radius, radius), mode="reflect")
    return F.conv2d(F.conv2d(padded, kernel.view(1, 1, -1, 1)), kernel.view(1, 1, 1, -1))


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """A (N,H,W) bool mask shrunk by `radius` pixels (square max-pool of its complement)."""
    if radius <= 0:
        return mask
    outside = F.max_pool2d((~mask)[:, None].float(), kernel_size=2 * radius + 1, stride=1, padding=radius)
    return outside[:, 0] == 0


def lung_highpass(sigma_px: float, erosion_px: int, signed: bool, *, reference_height: int | None = None) -> ScoreFn:
    """Local contrast, the image minus its Gaussian blur, inside the lungs eroded by `erosion_px` (the lung
    edge is contrast too): its positive part when `signed` (added density only), else its absolute value
    (density loss too). Sizes are pixels of an image `reference_height` high, scaled to the input's height
    (None: the input's own pixels)."""

    def score(image: torch.Tensor, lung_mask: torch.Tensor) -> torch.Tensor:
        scale = 1.0 if reference_height is None else image.shape[-2] / reference_height
        detail = image - gaussian_blur(image, sigma_px * scale)
        detail = detail.clamp_min(0) if signed else detail.abs()
        return detail * erode(lung_mask.bool(), round(erosion_px * scale))[:, None]

    return score


# The high-pass settings `choose_on_val` picks from, sized for 256-pixel images and scaled to others.
HIGHPASS_GRID: dict[str, ScoreFn] = {
    f"highpass_s{sigma}_e{erosion}_{'pos' if signed else 'abs'}": lung_highpass(sigma, erosion, signed, reference_height=256)
    for sigma in (4, 8, 16, 24)
    for erosion in (0, 3, 6)
    for signed in (True, False)
}


def choose_on_val(
    candidates: dict[str, ScoreFn],
    image: torch.Tensor,
    lesion_mask: torch.Tensor,
    lung_mask: torch.Tensor,
    metric: str = "auprc_in_lung",
) -> tuple[str, dict[str, dict[str, float]]]:
    """The candidate with the best val `metric` (a `localisation` key), and every candidate's val localisation.

    This tunes the baselines with val lesion masks, which real data would not allow: it favours the
    baselines, so a twin's lead over them, if any, is conservative."""
    scores = {name: localisation(fn(image, lung_mask), lesion_mask, lung_mask) for name, fn in candidates.items()}
    finite = {name: metrics[metric] for name, metrics in scores.items() if math.isfinite(metrics[metric])}
    if not finite:
        raise ValueError(f"no candidate has a finite {metric} on val (no lesion pixels to rank?)")
    return max(finite, key=finite.get), scores

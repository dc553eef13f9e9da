"""Generic lesions drawn into healthy radiographs: training pairs whose healthy half is known exactly.

Real data never gives a twin generator the same patient without disease. A CycleGAN's pseudo-normals
are one answer (twinray.shared.synthesis.pseudo_pairs); this is the other one that real data allows:
take a healthy image, draw something a healthy lung would not hold, and ask for the healthy image
back (self-supervised anomaly synthesis, as in FPI, Tan et al. 2020, and DRAEM, Zavrtanik et al. 2021).

The lesions are deliberately generic and written apart from the phantom generator's pathology code:
irregular blobs that ADD density (any size, subtle to obvious, with a texture of their own) and
blobs where density and fine structure are LOST (the image flattened and darkened there), centred in
the SEGMENTED lungs (what a real training set has) and fading out beyond them. So the generator
learns "take out what a healthy lung would not hold", of either sign, not one phantom's lesion physics.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur


@dataclasses.dataclass(frozen=True)
class LesionDraw:
    """What one draw may hold. Sizes are shares of the image side; contrasts are shares of the way to
    white (added density) or of the local intensity (lost density)."""

    max_lesions: int = 3
    radius: tuple[float, float] = (0.02, 0.2)  # log-uniform
    contrast: tuple[float, float] = (0.03, 0.4)  # log-uniform
    loss_share: float = 0.3  # the share of lesions that remove density and structure instead of adding

    def __post_init__(self) -> None:
        if self.max_lesions < 1:
            raise ValueError(f"max_lesions must be at least 1, got {self.max_lesions}")
        for name in ("radius", "contrast"):
            low, high = getattr(self, name)
            if not 0 < low <= high <= 1:
                raise ValueError(f"{name} must be a range 0 < low <= high <= 1, got {(low, high)}")
        if not 0 <= self.loss_share <= 1:
            raise ValueError(f"loss_share must be in [0, 1], got {self.loss_share}")


def _log_uniform(low: float, high: float, generator: torch.Generator) -> float:
    return math.exp(math.log(low) + (math.log(high) - math.log(low)) * torch.rand((), generator=generator).item())


def _smooth_noise(size: tuple[int, int], cells: int, generator: torch.Generator) -> torch.Tensor:
    """A smooth random field (H,W) with unit spread: Gaussian noise on a cells x cells grid, upsampled bicubic."""
    coarse = torch.randn((1, 1, cells, cells), generator=generator)
    field = F.interpolate(coarse, size=size, mode="bicubic", align_corners=False)[0, 0]
    return field / field.std().clamp_min(1e-6)


def _blob(lungs: torch.Tensor, draw: LesionDraw, generator: torch.Generator) -> torch.Tensor:
    """One irregular soft blob (H,W) in [0, 1], centred on a random pixel of `lungs` (which holds one)."""
    h, w = lungs.shape
    inside = lungs.nonzero()
    cy, cx = inside[torch.randint(len(inside), (), generator=generator)].tolist()
    radius = _log_uniform(*draw.radius, generator) * max(h, w)
    aspect = 0.5 + 0.5 * torch.rand((), generator=generator).item()
    angle = math.pi * torch.rand((), generator=generator).item()
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32) - cy, torch.arange(w, dtype=torch.float32) - cx, indexing="ij")
    u = (xx * math.cos(angle) + yy * math.sin(angle)) / radius
    v = (-xx * math.sin(angle) + yy * math.cos(angle)) / (radius * aspect)
    edge = 0.3 * _smooth_noise((h, w), 8, generator)
    softness = 0.05 + 0.25 * torch.rand((), generator=generator).item()
    return torch.sigmoid((1.0 - (u * u + v * v).sqrt() + edge) / softness)


def draw_lesions(
    normal: torch.Tensor, lungs: torch.Tensor, generator: torch.Generator, draw: LesionDraw = LesionDraw()
) -> torch.Tensor:
    """Healthy images (N,1,H,W) in [0, 1] with 1..`draw.max_lesions` generic lesions each, centred in
    `lungs` (N,H,W) bool (the segmenter's lungs): the abnormal half of a pair whose twin is `normal`.
    An image without segmented lungs stays as it is. Drawn on the CPU (the generator is a CPU one),
    returned on the images' device."""
    if normal.ndim != 4 or normal.shape[1] != 1 or lungs.shape != (normal.shape[0], *normal.shape[-2:]):
        raise ValueError(f"expected images (N,1,H,W) and lungs (N,H,W), got {tuple(normal.shape)} and {tuple(lungs.shape)}")
    device, normal, lungs = normal.device, normal.float().cpu(), lungs.cpu()
    h, w = normal.shape[-2:]
    sigma = 0.02 * max(h, w)
    kernel = 2 * math.ceil(3 * sigma) + 1
    near_lungs = gaussian_blur(lungs[:, None].float(), [kernel, kernel], [sigma, sigma]).clamp(0, 1)
    flat = gaussian_blur(normal, [kernel, kernel], [sigma / 2, sigma / 2])
    out = []
    for i in range(len(normal)):
        image = normal[i, 0]
        for _ in range(1 + int(torch.randint(draw.max_lesions, (), generator=generator)) if lungs[i].any() else 0):
            shape = _blob(lungs[i], draw, generator) * near_lungs[i, 0]
            contrast = _log_uniform(*draw.contrast, generator)
            if torch.rand((), generator=generator).item() < draw.loss_share:
                image = image + shape * (flat[i, 0] * (1.0 - contrast) - image)
            else:
                texture = 1.0 + 0.5 * _smooth_noise((h, w), 24, generator).clamp(-2, 2)
                image = image + (shape * contrast * texture).clamp(0, 1) * (1.0 - image)
        out.append(image.clamp(0.0, 1.0))
    return torch.stack(out)[:, None].to(device)

"""The PatchGAN discriminator every GAN of TwinRay uses (the CycleGAN translator's judges and disease
critic, the normal-synthesis generator's discriminator)."""

from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017, used by CycleGAN): image (N,1,S,S) -> real/fake logits
    (N,1,S/8-2,S/8-2), each judging a ~70 px patch, so it looks at texture and local shape."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1),
            nn.InstanceNorm2d(2 * c, affine=True),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * c, 4 * c, 4, stride=2, padding=1),
            nn.InstanceNorm2d(4 * c, affine=True),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(4 * c, 8 * c, 4, stride=1, padding=1),
            nn.InstanceNorm2d(8 * c, affine=True),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(8 * c, 1, 4, stride=1, padding=1),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # Per-image standardisation: exposure differs between radiographs, lesions are local.
        mean = image.mean(dim=(2, 3), keepdim=True)
        std = image.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
        return self.net((image - mean) / std)

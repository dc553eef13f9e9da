"""The four losses of anatomy-conditioned normal synthesis, each a small function a test can pin down.

Training data are pseudo-pairs (an abnormal image and its CycleGAN-translated normal) plus real
normal images. No loss reads a lesion mask: real radiographs come without one, so the generator must
learn where disease is from the pseudo-normals, the discriminator and the identity constraint alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def reconstruction_loss(twin: torch.Tensor, pseudo_normal: torch.Tensor) -> torch.Tensor:
    """L1 between the generated twin and the CycleGAN pseudo-normal of the same abnormal image."""
    return F.l1_loss(twin, pseudo_normal)


def lsgan_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN (Mao et al. 2017) for the patch discriminator: real patches -> 1, twins -> 0."""
    real = F.mse_loss(real_logits, torch.ones_like(real_logits))
    fake = F.mse_loss(fake_logits, torch.zeros_like(fake_logits))
    return 0.5 * (real + fake)


def lsgan_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN for the generator: every patch of a twin should look like a real normal (-> 1)."""
    return F.mse_loss(fake_logits, torch.ones_like(fake_logits))


def anatomy_consistency_loss(segmenter: nn.Module, twin: torch.Tensor, anatomy: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between the frozen segmenter's logits on the twin and the input's anatomy map.

    `twin` (N,1,H,W) is resized (bilinear) to the segmenter's input size, the size of `anatomy`
    (N,S,S) int64; gradients flow to the twin only (the caller freezes the segmenter). Removing a
    lesion must not move the heart border, the domes or the clavicles.
    """
    size = anatomy.shape[-2:]
    if twin.shape[-2:] != size:
        twin = F.interpolate(twin, size=size, mode="bilinear", align_corners=False)
    return F.cross_entropy(segmenter(twin).float(), anatomy.long())


def identity_loss(twin_of_normal: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """L1 between a normal image and its own twin: there is nothing to remove from a healthy image."""
    return F.l1_loss(twin_of_normal, normal)

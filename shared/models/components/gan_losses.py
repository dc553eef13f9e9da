"""The four losses of anatomy-conditioned normal synthesis, each a small function a test can pin down.

Training pairs are an abnormal image and the normal it should become: a CycleGAN pseudo-normal, or a
healthy image into which generic lesions were drawn (twinray.shared.synthesis.synthetic_lesions); real
normal images teach the identity. No loss reads a real lesion mask: real radiographs come without one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# |target - source| above this is a change the pair asks for (a 16-bit image's noise is far below it).
CHANGE_THRESHOLD = 0.003


def change_balanced_error(twin: torch.Tensor, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Squared error of the twin to its target, averaged over the batch's pixels that the pairs change
    (|target - source| > CHANGE_THRESHOLD) and over those they keep, separately, then summed. So the
    few lesion pixels weigh as much as the rest of the batch, and the error is squared, so a twin that
    changes nothing is no resting point, which it is for an L1 loss
    (docs/decisions/0109-generic-lesion-pairs.md). With target == source (healthy images' twins) it is
    the mean squared change."""
    error, changed = (twin - target) ** 2, (target - source).abs() > CHANGE_THRESHOLD
    kept = ~changed
    return (error * changed).sum() / changed.sum().clamp_min(1) + (error * kept).sum() / kept.sum().clamp_min(1)


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

"""The healthy twin at full resolution from a generator that runs at a lower resolution.

Generators see the image downsampled to `input_size`. Upsampling their output would blur ribs,
vessels and noise everywhere; instead only the generator's CHANGE is upsampled and subtracted from
the full-resolution input, so every pixel whose neighbourhood the generator left alone is returned
bit for bit, and the twin differs from the input only where the disease was removed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def to_input_size(image: torch.Tensor, input_size: int) -> torch.Tensor:
    """(N,C,H,W) in [0,1] -> (N,C,input_size,input_size), bilinear with antialiasing like
    `twinray.shared.platform.imaging.to_model_input` (unchanged when it already has that size)."""
    if image.shape[-2:] == (input_size, input_size):
        return image
    resized = F.interpolate(image, size=(input_size, input_size), mode="bilinear", align_corners=False, antialias=True)
    return resized.clamp(0.0, 1.0)


def full_resolution_twin(generator: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, input_size: int) -> torch.Tensor:
    """twin = image - upsample(image_low - generator(image_low)), clamped to [0, 1].

    `image` is (N,1,H,W) in [0,1]; `generator` maps the (N,1,input_size,input_size) image to its
    normal version at that size (pass a closure to condition it on anything else, e.g. anatomy).
    """
    if image.ndim != 4 or image.shape[1] != 1:
        raise ValueError(f"expected an (N, 1, H, W) image batch, got shape {tuple(image.shape)}")
    low = to_input_size(image, input_size)
    change = generator(low).float() - low
    if change.shape[-2:] != image.shape[-2:]:
        change = F.interpolate(change, size=image.shape[-2:], mode="bilinear", align_corners=False)
    return (image + change).clamp(0.0, 1.0)


TwinFunction = Callable[[torch.Tensor], torch.Tensor]


def batched(fn: TwinFunction, images: torch.Tensor, device: torch.device, batch: int = 16) -> torch.Tensor:
    """`fn` over `images` in batches on `device`, without gradients; the result on the CPU."""
    with torch.no_grad():
        return torch.cat([fn(images[i : i + batch].to(device)).cpu() for i in range(0, len(images), batch)])

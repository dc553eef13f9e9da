"""The one place where images change size: into a model, and model outputs back to the input's size.

Models see an S x S image in [0, 1]; the aspect ratio is not kept (chest X-rays are close to square,
and a plain stretch makes the way back to H x W exact). Model-specific normalisation such as
standardisation belongs to the model, not here.

Segmentation services should use `logits_to_labels` (bilinear upsampling of the class logits, then
argmax): boundaries come back smooth at full resolution, where `labels_to_size` (nearest neighbour on
an already-argmaxed map) gives S-pixel staircases. `labels_to_size` is for label maps that have no
logits, e.g. ground-truth masks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from twinray.shared.platform.imaging.unit_range import to_uint16, to_unit


def to_model_input(image: np.ndarray, size: int) -> torch.Tensor:
    """H x W image in [0, 1] -> 1 x 1 x size x size float32, bilinear with antialiasing."""
    if image.ndim != 2:
        raise ValueError(f"expected an H x W image, got shape {image.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    resized = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return resized.clamp_(0.0, 1.0)


def logits_to_size(logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of float maps [N, C, S, S] or [C, S, S] to height x width.

    Serves class logits, and equally any continuous output (healthy twin, residual map).
    """
    if logits.ndim == 3:
        return logits_to_size(logits[None], height, width)[0]
    if logits.ndim != 4:
        raise ValueError(f"expected [N, C, S, S] or [C, S, S] maps, got shape {tuple(logits.shape)}")
    return F.interpolate(logits.float(), size=(height, width), mode="bilinear", align_corners=False, antialias=True)


def logits_to_labels(logits: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Class logits [C, S, S] or [1, C, S, S] -> uint8 label map of height x width (what services use)."""
    if logits.ndim == 4 and logits.shape[0] == 1:
        logits = logits[0]
    if logits.ndim != 3 or logits.shape[0] > 256:
        raise ValueError(f"expected [C, S, S] logits with at most 256 classes, got shape {tuple(logits.shape)}")
    return logits_to_size(logits, height, width).argmax(dim=0).to(torch.uint8).numpy()


def labels_to_size(labels: torch.Tensor | np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an integer label map (leading size-1 axes allowed) to height x width.

    Pixel centres map to pixel centres (PyTorch's "nearest-exact"); the dtype is kept.
    """
    array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.dtype.kind not in "biu":
        raise ValueError(f"expected an integer H x W label map, got shape {array.shape} dtype {array.dtype}")
    rows = np.minimum(((np.arange(height) + 0.5) * array.shape[0] / height).astype(np.int64), array.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * array.shape[1] / width).astype(np.int64), array.shape[1] - 1)
    return array[rows[:, None], cols[None, :]]


def unit_images(images: np.ndarray) -> torch.Tensor:
    """uint16 images (N,H,W) -> float32 (N,1,H,W) in [0, 1]."""
    return torch.from_numpy(to_unit(images))[:, None]


def uint16_images(images: torch.Tensor) -> np.ndarray:
    """float (N,1,H,W) in [0, 1] (clamped) -> uint16 images (N,H,W): the inverse of `unit_images`."""
    return to_uint16(images[:, 0].numpy())

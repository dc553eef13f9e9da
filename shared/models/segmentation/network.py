"""The anatomy segmenter: MONAI's residual U-Net behind a config that the model registry stores.

Inputs are 1-channel images in [0, 1] at `input_size`; each image is standardised inside the module
so exposure differences between radiographs do not reach the first convolution.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import torch
from monai.networks.nets import UNet
from torch import nn

from twinray.shared.data.anatomy import NUM_ANATOMY_CLASSES
from twinray.shared.models.components.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class SegmenterConfig(ModelConfig):
    num_classes: int = NUM_ANATOMY_CLASSES
    input_size: int = 256
    channels: tuple[int, ...] = (16, 32, 64, 128)
    num_res_units: int = 1


class AnatomySegmenter(nn.Module):
    """Image (N,1,S,S) in [0,1] -> class logits (N,C,S,S)."""

    def __init__(self, config: SegmenterConfig) -> None:
        super().__init__()
        self.config = config
        self.unet = UNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=config.num_classes,
            channels=config.channels,
            strides=(2,) * (len(config.channels) - 1),
            num_res_units=config.num_res_units,
            norm="batch",
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        mean = image.mean(dim=(2, 3), keepdim=True)
        std = image.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
        return self.unet((image - mean) / std)


def segmenter_from_weights(config: dict[str, Any], weights: bytes) -> AnatomySegmenter:
    """Rebuild a published segmenter (config + torch state dict bytes), ready for inference."""
    model = AnatomySegmenter(SegmenterConfig.from_dict(config))
    model.load_state_dict(torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True))
    return model.eval()

"""Each served network as a tensors-in/tensors-out module ready for ONNX export, rebuilt from its
published (config, weights), with example inputs at the size it was trained for. The tensor names
are the contract in twinray.shared.platform.triton.SIGNATURES."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from twinray.shared.data.anatomy import NUM_ANATOMY_CLASSES
from twinray.shared.models.components.diffusion import DiffusionConfig, build_unet
from twinray.shared.models.detection.head_outputs import DetectorCore
from twinray.shared.models.detection.network import detector_from_weights, input_channels
from twinray.shared.models.matching_pairs.network import translator_from_weights
from twinray.shared.models.normal_synthesis.network import normal_synthesizer_from_weights
from twinray.shared.models.segmentation.network import segmenter_from_weights

EXAMPLE_BATCH = 2  # traced at 2, exported with a dynamic batch dimension


@dataclasses.dataclass(frozen=True)
class Exportable:
    module: nn.Module
    example: tuple[torch.Tensor, ...]


class UNetPrediction(nn.Module):
    """diffusers' UNet2DModel returns a dataclass; ONNX wants the tensor: (x_t, t (N, 1)) -> its prediction.
    The timestep has a trailing axis because Triton needs every input to have a shape past the batch."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep[:, 0]).sample


def _image(size: int, channels: int = 1) -> torch.Tensor:
    return torch.rand(EXAMPLE_BATCH, channels, size, size, generator=torch.Generator().manual_seed(0))


def _segmentation(config: dict[str, Any], weights: bytes) -> Exportable:
    return Exportable(segmenter_from_weights(config, weights), (_image(config["input_size"]),))


def _normal_synthesis(config: dict[str, Any], weights: bytes) -> Exportable:
    size = config["input_size"]
    anatomy = torch.randint(0, NUM_ANATOMY_CLASSES, (EXAMPLE_BATCH, size, size), generator=torch.Generator().manual_seed(0))
    return Exportable(normal_synthesizer_from_weights(config, weights), (_image(size), anatomy))


def _matching_pairs(config: dict[str, Any], weights: bytes) -> Exportable:
    return Exportable(translator_from_weights(config, weights).eval(), (_image(config["input_size"]),))


def _detection(config: dict[str, Any], weights: bytes) -> Exportable:
    detector = detector_from_weights(config, weights)
    return Exportable(DetectorCore(detector).eval(), (_image(detector.config.input_size, input_channels(detector.config)),))


def _ddpm(config: dict[str, Any], weights: bytes) -> Exportable:
    diffusion = DiffusionConfig.from_dict(config)
    unet = build_unet(diffusion)
    unet.load_state_dict(torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True))
    timesteps = torch.randint(0, diffusion.train_timesteps, (EXAMPLE_BATCH, 1), generator=torch.Generator().manual_seed(0))
    return Exportable(UNetPrediction(unet).eval(), (_image(diffusion.image_size) * 2 - 1, timesteps))


EXPORTABLES: dict[str, Callable[[dict[str, Any], bytes], Exportable]] = {
    "segmentation": _segmentation,
    "normal-synthesis": _normal_synthesis,
    "matching-pairs": _matching_pairs,
    "detection": _detection,
    "defect-masks": _ddpm,
    "normal-manifold": _ddpm,
}

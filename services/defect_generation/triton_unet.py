"""The mask DDPM's UNet on Triton: what the samplers call, `unet(x_t, t).sample`, answered by the
exported network (one Triton request per denoising step, batched by Triton across requests).

Only the mask DDPM runs there. The normal-manifold DDPM stays in-process: conditioned_ddpm's
encoder adds residuals inside its UNet (ControlNet-style injection into skips and middle block),
which a network exported as (x_t, t) -> prediction cannot take."""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import nn

from twinray.services.common.triton_runner import TritonEndpoint, TritonModule


class TritonUNet(nn.Module):
    """Stands where a UNet2DModel stood for `sample` / `sample_masks`."""

    def __init__(self, endpoint: TritonEndpoint, name: str, version: int, config: dict[str, Any]) -> None:
        super().__init__()
        self.network = TritonModule(endpoint, name, version, config)
        # No weights here; the samplers read the device and dtype of a UNet's first parameter.
        self.placement = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int) -> UNet2DOutput:
        steps = torch.as_tensor(timestep, dtype=torch.int64).reshape(-1, 1).expand(len(sample), 1)  # one t per image, (N, 1)
        return UNet2DOutput(sample=self.network(sample, steps).to(sample.device, sample.dtype))

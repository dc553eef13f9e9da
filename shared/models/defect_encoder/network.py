"""`conditioned_ddpm`'s conditioning encoder: steer a FROZEN normal-manifold DDPM to draw a defect inside a
given mask, ControlNet-style (Zhang et al. 2023), and keep the normal image outside that mask with
RePaint-style inpainting (Lugmayr et al. 2022).

Why this shape. A factory has thousands of normal images and a handful of defects: the DDPM learns
"normal" from the many, and only a small encoder learns "defect" from the few. The encoder reads the
noisy image, the timestep, the mask and the normal surroundings, and adds one residual to every skip
connection of the UNet plus one to its middle block, as ControlNet does. Its output convolutions
start at zero, so before training the frozen DDPM is exactly unchanged and training only learns the
change that a defect needs (no early steps that destroy what the DDPM knew).

How the residuals get in. diffusers' `UNet2DModel.forward` takes no additional residuals (only
`UNet2DConditionModel` does, for text-conditioned models). `unet_with_residuals` therefore runs the
UNet's own submodules (time embedding, conv_in, down blocks, mid block, up blocks, output head) in the
order `UNet2DModel.forward` does and adds the residuals to the skips. We preferred that to forward
hooks: a hook is state on the shared module (a Ray Serve replica answers several requests with one
UNet, and training shares it with evaluation), and a hook on `conv_in` could not tell its skip from
the main path, which ControlNet leaves untouched. The price is following diffusers' forward for the
configurations `twinray.shared.models.components.diffusion.build_unet` makes; a test pins that with zero residuals it
equals `unet(x, t)` exactly, so a diffusers change that breaks it fails loudly.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from twinray.shared.models.components.config import ModelConfig
from twinray.shared.models.components.diffusion import (
    DiffusionConfig,
    Sampler,
    Scheduler,
    make_scheduler,
    noised,
    reverse_process,
    to_model_range,
    training_target,
)

Residuals = tuple[tuple[torch.Tensor, ...], torch.Tensor]  # (one per UNet skip, the middle block's)


@dataclasses.dataclass(frozen=True)
class DefectEncoderConfig(ModelConfig):
    # Level i has (UNet channels at level i) // channel_divisor channels: ControlNet copies the UNet's
    # encoder at full width, more than a few defect images can train.
    channel_divisor: int = 2
    blocks_per_level: int = 1


def skip_plan(unet_config: DiffusionConfig) -> list[tuple[int, int]]:
    """(channels, resolution level) of each skip `UNet2DModel` keeps on its way down, in order: the
    input convolution's, one per residual block of every level, and each downsampler's (one level
    lower). The up blocks consume them in reverse."""
    channels = unet_config.channels
    plan = [(channels[0], 0)]
    for level, width in enumerate(channels):
        plan += [(width, level)] * unet_config.layers_per_block
        if level < len(channels) - 1:
            plan.append((width, level + 1))
    return plan


def _zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class _Block(nn.Module):
    """conv -> GroupNorm -> + timestep embedding -> SiLU: the encoder must know the noise level, as
    what a defect looks like in x_t depends on it."""

    def __init__(self, channels: int, time_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.GroupNorm(math.gcd(channels, 8), channels)
        self.time = nn.Linear(time_dim, channels)

    def forward(self, h: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return F.silu(self.norm(self.conv(h)) + self.time(time)[:, :, None, None])


class DefectEncoder(nn.Module):
    """(x_t, t, mask, normal) -> residuals for every skip of the UNet built from `unet_config`.

    x_t: (N,1,S,S) in the model's [-1, 1] range; mask: (N,1,S,S) in {0, 1}, 1 = defect; normal:
    (N,1,S,S) in [0, 1], read only OUTSIDE the mask (inside it is zeroed), so training may pass the
    defect image itself as its own context without showing the encoder the answer.
    """

    def __init__(self, config: DefectEncoderConfig, unet_config: DiffusionConfig) -> None:
        super().__init__()
        widths = [max(c // config.channel_divisor, 1) for c in unet_config.channels]
        time_dim = 4 * widths[0]
        self.time_proj = Timesteps(widths[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(widths[0], time_dim)
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1)
        self.downsamples = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        self.levels = nn.ModuleList(nn.ModuleList(_Block(w, time_dim) for _ in range(config.blocks_per_level)) for w in widths)
        plan = skip_plan(unet_config)
        self.skip_levels = [level for _, level in plan]
        self.skip_convs = nn.ModuleList(_zero_conv(widths[level], c) for c, level in plan)
        self.mid_conv = _zero_conv(widths[-1], unet_config.channels[-1])

    def forward(self, x_t: torch.Tensor, timestep: torch.Tensor | int, mask: torch.Tensor, normal: torch.Tensor) -> Residuals:
        t = torch.as_tensor(timestep, device=x_t.device).reshape(-1).expand(x_t.shape[0])
        time = self.time_embedding(self.time_proj(t).to(x_t.dtype))
        context = torch.where(mask.bool(), torch.zeros_like(normal), to_model_range(normal))
        h = self.stem(torch.cat([x_t, to_model_range(mask), context], dim=1))
        features = []
        for level, blocks in enumerate(self.levels):
            if level:
                h = self.downsamples[level - 1](h)
            for block in blocks:
                h = block(h, time)
            features.append(h)
        skips = tuple(conv(features[level]) for conv, level in zip(self.skip_convs, self.skip_levels))
        return skips, self.mid_conv(features[-1])


def _check_supported(unet: UNet2DModel) -> None:
    config = unet.config
    if (
        config.time_embedding_type != "positional"
        or config.center_input_sample
        or unet.class_embedding is not None
        or unet.mid_block is None
        or any(hasattr(block, "skip_conv") for block in [*unet.down_blocks, *unet.up_blocks])
    ):
        raise ValueError(
            "residual injection supports UNet2DModels as twinray.shared.models.components.diffusion.build_unet makes them"
        )


def unet_with_residuals(unet: UNet2DModel, x_t: torch.Tensor, timestep: torch.Tensor | int, residuals: Residuals) -> torch.Tensor:
    """eps_theta(x_t, t) of `unet` with `residuals` added to its skips and its middle block output
    (ControlNet's injection); equals `unet(x_t, t).sample` when the residuals are zero."""
    _check_supported(unet)
    skip_residuals, mid_residual = residuals
    t = torch.as_tensor(timestep, device=x_t.device).reshape(-1).expand(x_t.shape[0])
    emb = unet.time_embedding(unet.time_proj(t).to(dtype=unet.dtype))
    h = unet.conv_in(x_t)
    skips: tuple[torch.Tensor, ...] = (h,)
    for block in unet.down_blocks:
        h, block_skips = block(hidden_states=h, temb=emb)
        skips += block_skips
    if len(skips) != len(skip_residuals):
        raise ValueError(f"the UNet keeps {len(skips)} skips, the encoder made {len(skip_residuals)} residuals")
    skips = tuple(s + r for s, r in zip(skips, skip_residuals))
    h = unet.mid_block(h, emb) + mid_residual
    for block in unet.up_blocks:
        used = len(block.resnets)
        h = block(h, skips[-used:], emb)
        skips = skips[:-used]
    return unet.conv_out(unet.conv_act(unet.conv_norm_out(h)))


def conditioned_noise(
    unet: UNet2DModel,
    encoder: DefectEncoder,
    x_t: torch.Tensor,
    timestep: torch.Tensor | int,
    mask: torch.Tensor,
    normal: torch.Tensor,
) -> torch.Tensor:
    """The frozen DDPM's prediction (noise or velocity, per its config), steered by the encoder
    towards a defect inside `mask`."""
    return unet_with_residuals(unet, x_t, timestep, encoder(x_t, timestep, mask, normal))


def conditioned_loss(
    unet_frozen: UNet2DModel,
    encoder: DefectEncoder,
    scheduler: Scheduler,
    defect_image: torch.Tensor,
    mask: torch.Tensor,
    normal_context: torch.Tensor,
    generator: torch.Generator,
    mask_weight: float = 1.0,
) -> torch.Tensor:
    """Ho et al.'s L_simple on the defect images, predicted by the frozen UNet plus the encoder's
    residuals. Freezes `unet_frozen` (requires_grad False) so only the encoder learns; gradients still
    flow THROUGH the UNet to the residuals. Images in [0, 1], mask in {0, 1}, all (N,1,S,S);
    `normal_context` may be `defect_image` itself (the encoder reads it only outside the mask).
    Pixels inside the mask weigh `mask_weight` times the others (1 = the plain mean): a defect covers
    a few % of the image, and only there does the encoder have anything to add to the normal DDPM."""
    unet_frozen.requires_grad_(False)
    clean = to_model_range(defect_image)
    x_t, t, noise = noised(scheduler, clean, generator)
    prediction = conditioned_noise(unet_frozen, encoder, x_t, t, mask, normal_context)
    target = training_target(scheduler, clean, noise, t)
    weight = 1.0 + (mask_weight - 1.0) * mask.float()
    return ((prediction.float() - target.float()) ** 2 * weight).sum() / weight.sum()


def check_image_and_mask(normal: torch.Tensor, mask: torch.Tensor) -> None:
    """ValueError unless both are (N,1,H,W) of one shape and the mask holds only 0 and 1."""
    if normal.ndim != 4 or normal.shape[1] != 1 or mask.shape != normal.shape:
        shapes = f"{tuple(normal.shape)} and {tuple(mask.shape)}"
        raise ValueError(f"expected image and mask of one shape (N, 1, H, W), got {shapes}")
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError("the mask must be binary (0 outside the defect, 1 inside)")


@torch.no_grad()
def inpaint_defect(
    unet: UNet2DModel,
    encoder: DefectEncoder | None,
    config: DiffusionConfig,
    normal: torch.Tensor,
    mask: torch.Tensor,
    *,
    steps: int | None = None,
    sampler: Sampler = "ddim",
    seed: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """`normal` (N,1,S,S) in [0, 1] with a defect drawn inside `mask` (same shape, {0, 1}); pixels
    outside the mask are returned exactly as given. Without an encoder it is plain RePaint with the
    normal-manifold DDPM (a baseline: it fills the hole with more normal surface).

    RePaint without resampling: before every reverse step the known region of x_t is replaced by the
    normal image noised to that t (q(x_t | x_0), Ho et al. Eq. 4), so the generated region is denoised
    next to surroundings at its own noise level and joins them without a seam.
    """
    check_image_and_mask(normal, mask)
    scheduler = make_scheduler(config, sampler, steps)
    generator = torch.Generator().manual_seed(seed)
    known = to_model_range(normal)

    def keep_known(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(known.shape, generator=generator).to(known.device, known.dtype)
        return torch.where(mask.bool(), x_t, scheduler.add_noise(known, noise, t))

    def predict_noise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if encoder is None:
            return unet(x_t, t).sample
        return conditioned_noise(unet, encoder, x_t, t, mask, normal)

    x_T = torch.randn(normal.shape, generator=generator).to(normal.device, normal.dtype)
    x_0 = reverse_process(scheduler, x_T, predict_noise, generator, before_step=keep_known, progress=progress)
    return torch.where(mask.bool(), (x_0.clamp(-1.0, 1.0) + 1.0) / 2.0, normal)


def encoder_from_weights(config: dict[str, Any], weights: bytes) -> DefectEncoder:
    """Rebuild a published defect encoder (config = {"encoder", "unet", ...} as published, torch state
    dict bytes), ready for inference; the frozen UNet it steers is normal-manifold
    v`config["normal_manifold_version"]`."""
    encoder = DefectEncoder(DefectEncoderConfig.from_dict(config["encoder"]), DiffusionConfig.from_dict(config["unet"]))
    encoder.load_state_dict(torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True))
    return encoder.eval()

"""Denoising diffusion (DDPM, Ho et al. 2020) over one-channel images: the network, its training loss
and its samplers, shared by both defect-generation approaches.

`mask_blend` learns the manifold of binary defect MASKS with it, `conditioned_ddpm` the manifold of NORMAL
product images (then steered by twinray.shared.models.defect_encoder.network). The network is diffusers'
`UNet2DModel` and the noise schedules are diffusers' `DDPMScheduler` / `DDIMScheduler`: a well-kept
implementation of the paper, so this file only chooses their sizes, writes the paper's loss and runs
the reverse process. Images are [0, 1] at every public boundary here (masks are {0, 1}); the network
sees them scaled to [-1, 1], the range the schedulers' sample clipping assumes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from tqdm import tqdm

from twinray.shared.models.components.config import ModelConfig

Sampler = Literal["ddpm", "ddim"]
Scheduler = DDPMScheduler | DDIMScheduler
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTIONS = ("epsilon", "v_prediction")
DEFAULT_DDIM_STEPS = 50


@dataclasses.dataclass(frozen=True)
class DiffusionConfig(ModelConfig):
    image_size: int = 64
    channels: tuple[int, ...] = (32, 64, 64)  # per resolution level; the image is halved between levels
    layers_per_block: int = 1  # residual blocks per level on the way down (one more on the way up)
    # Self-attention at the lowest-resolution level and in the middle block (Ho et al. put it at
    # 16x16): global shape coherence for a mask, at a cost that only grows with that small grid.
    attention: bool = True
    norm_groups: int = 8  # GroupNorm groups; every channel count must be a multiple
    train_timesteps: int = 1000
    beta_schedule: str = "linear"  # Ho et al.'s; "squaredcos_cap_v2" is Nichol & Dhariwal's cosine
    # What the network predicts: "v_prediction" (v = sqrt(abar) eps - sqrt(1 - abar) x_0, Salimans &
    # Ho 2022) or Ho et al.'s "epsilon". With epsilon, x_0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)
    # multiplies every error by up to 1/sqrt(abar) ~ 100 at high noise, and mask DDPMs drew
    # salt-and-pepper noise instead of shapes (docs/decisions/0001-ddpm-predicts-v.md).
    prediction: str = "v_prediction"

    def validate(self) -> None:
        side = 1 << max(len(self.channels) - 1, 0)
        if not self.channels or self.image_size % side:
            raise ValueError(f"image_size {self.image_size} must be a multiple of {side} ({len(self.channels)} levels)")
        if any(c % self.norm_groups for c in self.channels):
            raise ValueError(f"channels {self.channels} must be multiples of norm_groups={self.norm_groups}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.train_timesteps < 2 or self.layers_per_block < 1:
            raise ValueError("train_timesteps must be >= 2 and layers_per_block >= 1")


# The UNet of each DDPM TwinRay trains (twinray.training.ddpm picks them; the benchmarks time them). Masks are
# simple shapes: a narrower UNet learns them as well, and faster (docs/decisions/0002-narrow-mask-unet.md);
# but at the products' own 64 px, since at half that a 1 px scratch or crack covers half of each 2x2
# block and is partly lost (docs/decisions/0003-mask-ddpm-at-64px.md).
ARCHITECTURES: dict[str, DiffusionConfig] = {
    "mask": DiffusionConfig(image_size=64, channels=(16, 32, 32)),
    "image": DiffusionConfig(image_size=32, channels=(32, 64, 64)),
}


def build_unet(config: DiffusionConfig) -> UNet2DModel:
    """The noise-prediction network eps_theta(x_t, t): one channel in, one out."""
    config.validate()
    plain_levels = len(config.channels) - 1 if config.attention else len(config.channels)
    down = ["DownBlock2D"] * plain_levels + ["AttnDownBlock2D"] * (len(config.channels) - plain_levels)
    up = [name.replace("Down", "Up") for name in reversed(down)]
    return UNet2DModel(
        sample_size=config.image_size,
        in_channels=1,
        out_channels=1,
        block_out_channels=config.channels,
        layers_per_block=config.layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        add_attention=config.attention,
        norm_num_groups=config.norm_groups,
    )


def make_scheduler(config: DiffusionConfig, sampler: Sampler = "ddpm", steps: int | None = None) -> Scheduler:
    """A fresh noise schedule (schedulers keep the timesteps of the current run: one per run, so
    concurrent requests in one replica never share one). Training only needs its `add_noise`.

    DDPM runs the ancestral sampler over every train timestep (`steps` must be None or equal);
    DDIM (Song et al. 2021) runs `steps` of them (default 50) with eta = 0, deterministic given x_T.
    """
    schedule = {
        "num_train_timesteps": config.train_timesteps,
        "beta_schedule": config.beta_schedule,
        "prediction_type": config.prediction,
    }
    if sampler == "ddpm":
        if steps not in (None, config.train_timesteps):
            raise ValueError(f"DDPM samples with all {config.train_timesteps} train timesteps; use DDIM for {steps}")
        scheduler: Scheduler = DDPMScheduler(**schedule)
        scheduler.set_timesteps(config.train_timesteps)
    elif sampler == "ddim":
        steps = DEFAULT_DDIM_STEPS if steps is None else steps
        if not 1 <= steps <= config.train_timesteps:
            raise ValueError(f"DDIM steps must be in [1, {config.train_timesteps}], got {steps}")
        # The default "leading" spacing, t = i * (T // steps): the only one whose timesteps match the
        # step's own t - T // steps arithmetic for every step count (docs/decisions/0004-ddim-leading-spacing.md).
        # It starts at (steps-1) * (T // steps): for 10+ steps of the linear 1000, alpha-bar < 3e-4 there (pure noise).
        scheduler = DDIMScheduler(**schedule)
        scheduler.set_timesteps(steps)
    else:
        raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")
    return scheduler


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], the range the network and the schedulers work in."""
    return images * 2.0 - 1.0


def noised(scheduler: Scheduler, x0: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, t, eps) with t ~ U{0..T-1} per image and eps ~ N(0, I): q(x_t | x_0) of Ho et al. Eq. 4,
    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps. Drawn on the CPU generator, so a seed gives the
    same draw on any device."""
    t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    return scheduler.add_noise(x0, noise, t), t, noise


def training_target(scheduler: Scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the network must output at (x_t, t): the noise eps, or the velocity v, per the
    scheduler's prediction type (the one its config names). `x0` in [-1, 1]."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    return noise


def ddpm_loss(unet: UNet2DModel, scheduler: Scheduler, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """L_simple of Ho et al. Eq. 14, || target - net(x_t, t) ||^2 with t uniform; the target is eps,
    or v under v-prediction (`training_target`).

    `x0`: clean images (N, 1, S, S) in [0, 1] (scaled to [-1, 1] here). `generator`: a CPU
    torch.Generator that draws t and eps. Returns the scalar mean (float32, also under autocast).
    """
    clean = to_model_range(x0)
    x_t, t, noise = noised(scheduler, clean, generator)
    return F.mse_loss(unet(x_t, t).sample.float(), training_target(scheduler, clean, noise, t).float())


def reverse_process(
    scheduler: Scheduler,
    x: torch.Tensor,
    predict_noise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    generator: torch.Generator,
    *,
    before_step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """x_T -> x_0 over `scheduler.timesteps`. `before_step(x_t, t)` may rewrite x_t before the network
    sees it (inpainting puts the known pixels back there). DDPM draws its step noise from `generator`."""
    extra = {"eta": 0.0} if isinstance(scheduler, DDIMScheduler) else {}
    for t in tqdm(scheduler.timesteps, desc="denoising", disable=not progress):
        if before_step is not None:
            x = before_step(x, t)
        x = scheduler.step(predict_noise(x, t), t, x, generator=generator, **extra).prev_sample
    return x


@torch.no_grad()
def sample(
    unet: UNet2DModel,
    config: DiffusionConfig,
    count: int,
    *,
    steps: int | None = None,
    sampler: Sampler = "ddpm",
    seed: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """`count` new images (count, 1, S, S) in [0, 1], on the network's device; the same seed gives the
    same images. DDPM uses all train timesteps, DDIM `steps` (default 50); see `make_scheduler`."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    scheduler = make_scheduler(config, sampler, steps)
    parameter = next(unet.parameters())
    generator = torch.Generator().manual_seed(seed)
    shape = (count, 1, config.image_size, config.image_size)
    x_T = torch.randn(shape, generator=generator).to(parameter.device, parameter.dtype)
    x_0 = reverse_process(scheduler, x_T, lambda x, t: unet(x, t).sample, generator, progress=progress)
    return (x_0.float().clamp(-1.0, 1.0) + 1.0) / 2.0


def binarise(images: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Sampled masks in [0, 1] -> {0, 1} float masks (1 where the value exceeds `threshold`)."""
    return (images > threshold).to(images.dtype)


def nonempty(masks: torch.Tensor, min_pixels: int = 1) -> torch.Tensor:
    """Bool (N,): which binary masks (N, 1, H, W) hold at least `min_pixels` defect pixels. What to do
    with empty ones (resample, drop, fail) is the caller's choice."""
    return masks.flatten(1).sum(dim=1) >= min_pixels

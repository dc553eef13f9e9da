"""Ray Train for the two unconditional DDPMs of defect generation: `twinray train defect-masks`
(`mask_blend`: the manifold of the few real defect MASKS) and `twinray train normal-manifold`
(`conditioned_ddpm`: the manifold of NORMAL product surfaces). Same loop, different images.

Scarce data is the point of `mask_blend` (5 or 20 real masks), so every batch is drawn with
replacement and augmented by the eight flips and quarter turns (a scratch rotated is still a
scratch); an epoch is a fixed number of steps, not a pass over the data. The weights published are
an exponential moving average of the trained ones (Ho et al. 2020, Sec. 4, decay 0.9999 there; lower
here for short CPU runs), the checkpoint kept is the one with the lowest DDPM loss on held-out
images at fixed noise, and a few samples are drawn at the end so the model card says what it makes.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import ray.train.torch
import torch
import torch.nn.functional as F

from twinray.shared.data.augmentation import augmented_batch
from twinray.shared.data.products.dataset import ProductArrays, read_product_manifest, read_product_split
from twinray.shared.models.components.diffusion import (
    ARCHITECTURES,
    DiffusionConfig,
    binarise,
    build_unet,
    ddpm_loss,
    make_scheduler,
    nonempty,
    sample,
)
from twinray.shared.platform.config import Settings
from twinray.shared.platform.imaging.unit_range import to_unit
from twinray.shared.platform.registry import ModelVersion
from twinray.shared.platform.storage import ArtifactStore
from twinray.training import harness
from twinray.training.autocast import autocast
from twinray.training.config import TrainConfig

Target = Literal["mask", "image"]
MODEL_NAMES: dict[str, str] = {"mask": "defect-masks", "image": "normal-manifold"}
# What each DDPM trains on and with, unless told otherwise. Masks train twice the steps at twice the
# rate, or they draw mostly empty masks (docs/decisions/0107-mask-ddpm-training-budget.md).
TARGET_DEFAULTS: dict[str, dict[str, Any]] = {
    "mask": {
        "train_split": "train_defect",
        "val_split": "val_defect",
        "epochs": 20,
        "learning_rate": 2e-3,
        "model": ARCHITECTURES["mask"],
    },
    "image": {
        "train_split": "train_normal",
        "val_split": "val_normal",
        "model": ARCHITECTURES["image"],
    },
}
SCORE = "val_score"  # minus the held-out DDPM loss: higher is better, like every other TwinRay score


@dataclasses.dataclass(frozen=True)
class DiffusionRun(TrainConfig):
    """What every diffusion trainer of defect generation shares: data, budget, schedule, scale."""

    dataset: str = "products"
    train_split: str = "train_defect"
    val_split: str = "val_defect"  # the best checkpoint is chosen on it: never a test split
    real_count: int = 0  # use only the first `real_count` training images (0 = all): the k of "k real defects"
    epochs: int = 10
    steps_per_epoch: int = 50
    batch_size: int = 16
    learning_rate: float = 1e-3
    ema_decay: float = 0.99
    seed: int = 0
    workers: int = 1
    use_gpu: bool = False


@dataclasses.dataclass(frozen=True)
class DdpmTrainConfig(DiffusionRun):
    target: Target = "mask"  # "mask": the masks of `train_split`'s defect images; "image": its images
    model: DiffusionConfig = TARGET_DEFAULTS["mask"]["model"]  # `ddpm_config` picks each target's defaults


def ddpm_config(target: Target, image_size: int = 0, **fields: Any) -> DdpmTrainConfig:
    """The training config of `target`'s DDPM: its defaults (TARGET_DEFAULTS), then `fields`;
    `image_size` (0 = the default) resizes its UNet's images."""
    if target not in TARGET_DEFAULTS:
        raise ValueError(f"target must be 'mask' or 'image', got {target!r}")
    defaults = dict(TARGET_DEFAULTS[target])
    if image_size:
        defaults["model"] = dataclasses.replace(defaults["model"], image_size=image_size)
    return DdpmTrainConfig(target=target, **{**defaults, **fields})


def training_images(arrays: ProductArrays, target: Target, size: int, count: int = 0) -> torch.Tensor:
    """(N,1,size,size) float in [0,1]: the defect masks (images with a defect only) or the images."""
    if target == "mask":
        data = torch.from_numpy(arrays.mask[arrays.defect_rows()].astype(np.float32))
    else:
        data = torch.from_numpy(to_unit(arrays.image))
    if count:
        data = data[:count]
    if not len(data):
        raise ValueError(f"no {target}s to train on")
    data = data[:, None]
    if data.shape[-1] != size:  # masks stay binary: area-average then threshold
        data = F.interpolate(data, size=(size, size), mode="area")
        data = binarise(data) if target == "mask" else data
    return data


def ema_steps(
    model: torch.nn.Module,
    ema: torch.optim.swa_utils.AveragedModel,
    optimiser: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    steps: int,
    device: torch.device,
    step_loss: Callable[[], torch.Tensor],
) -> float:
    """`steps` optimiser steps on `step_loss()` (under autocast), the learning-rate schedule and the EMA
    of `model` advanced after each; returns the mean loss. One epoch of every diffusion trainer."""
    total = 0.0
    for _ in range(steps):
        with autocast(device):
            loss = step_loss()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        ema.update_parameters(harness.unwrap(model))
        total += loss.item()
    return total / steps


def held_out_loss(unet: torch.nn.Module, config: DiffusionConfig, images: torch.Tensor, device: torch.device) -> float:
    """DDPM loss on `images` at a FIXED draw of t and noise, so epochs compare like for like."""
    scheduler, generator = make_scheduler(config), torch.Generator().manual_seed(1234)
    with torch.no_grad():
        losses = [ddpm_loss(unet, scheduler, images[i : i + 32].to(device), generator).item() for i in range(0, len(images), 32)]
    return float(np.mean(losses))


def train_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    worker = harness.worker_context(loop_config, DdpmTrainConfig)
    config, device = worker.config, worker.device
    torch.manual_seed(worker.shared_seed("weights"))  # same initial weights on every rank
    size, target = config.model.image_size, config.target
    data = training_images(read_product_split(worker.store, config.dataset, config.train_split), target, size, config.real_count)
    val = (
        training_images(read_product_split(worker.store, config.dataset, config.val_split), target, size)
        if worker.is_rank0
        else None
    )

    unet = ray.train.torch.prepare_model(build_unet(config.model))
    ema = torch.optim.swa_utils.AveragedModel(
        harness.unwrap(unet), multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema_decay)
    )
    optimiser = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate)
    total = config.epochs * config.steps_per_epoch
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.learning_rate, total_steps=total, pct_start=0.1)
    scheduler = make_scheduler(config.model)
    draws = worker.rank_generator("batches")

    for epoch in range(config.epochs):
        unet.train()
        started = time.time()
        train_loss = ema_steps(
            unet,
            ema,
            optimiser,
            schedule,
            config.steps_per_epoch,
            device,
            lambda: ddpm_loss(unet, scheduler, augmented_batch(data, config.batch_size, draws).to(device), draws),
        )
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "epoch_seconds": time.time() - started,
            "training_images": len(data),
        }
        if worker.is_rank0:
            metrics["val_loss"] = held_out_loss(ema.module.eval(), config.model, val, device)
            metrics[SCORE] = -metrics["val_loss"]
            print(
                f"[{MODEL_NAMES[target]}] epoch {epoch + 1}/{config.epochs} loss {metrics['train_loss']:.4f} "
                f"held-out loss (EMA) {metrics['val_loss']:.4f} ({metrics['epoch_seconds']:.0f}s, {len(data)} {target}s)",
                flush=True,
            )
        harness.save_checkpoint(ema.module.state_dict(), epoch + 1, metrics)


def prepare(target: Target, store: ArtifactStore, config: DdpmTrainConfig) -> harness.Prepared[DdpmTrainConfig]:
    """The config must train `target` with a valid UNet, on a dataset that exists (before Ray starts)."""
    if config.target != target:
        raise ValueError(f"{MODEL_NAMES[target]} trains target {target!r}, got {config.target!r}")
    config.model.validate()
    read_product_manifest(store, config.dataset)
    return harness.Prepared(config)


def sample_summary(store: ArtifactStore, config: DdpmTrainConfig, weights: dict[str, torch.Tensor]) -> dict[str, float]:
    """What 8 DDIM-50 samples of the published weights look like, for the card and the metrics."""
    unet = build_unet(config.model)
    unet.load_state_dict(weights)
    samples = sample(unet.eval(), config.model, 8, steps=50, sampler="ddim", seed=0)
    if config.target == "mask":
        masks = binarise(samples)
        return {"sample_nonempty_fraction": float(nonempty(masks).float().mean()), "sample_mean_area": float(masks.mean())}
    return {"sample_mean": float(samples.mean()), "sample_std": float(samples.std())}


def card(run: harness.Trained[DdpmTrainConfig]) -> str:
    """What the published DDPM learnt from, and what its samples look like."""
    config, metrics = run.config, run.metrics
    return (
        f"# {MODEL_NAMES[config.target]}\n\nUnconditional DDPM (Ho et al. 2020; diffusers UNet2DModel, channels "
        f"{list(config.model.channels)}, {config.model.image_size}px, {config.model.train_timesteps} steps, "
        f"{config.model.beta_schedule} betas) over the {config.target}s of `{config.dataset}`/{config.train_split}"
        f" ({metrics.get('training_images', '?')} images, 8-fold flip/turn augmentation), EMA {config.ema_decay}.\n"
        f"Best epoch {run.best_epoch} of {config.epochs} by held-out DDPM loss on `{config.val_split}`: "
        f"{metrics.get('val_loss', float('nan')):.4f}. 8 DDIM-50 samples: {run.summary}.\n"
    )


REAL_COUNT = harness.Flag("--real-count", 0, "use only the first N training images (0 = all)")


def _spec(target: Target, description: str) -> harness.TrainSpec[DdpmTrainConfig]:
    """Both DDPMs train with the same loop; the target picks the images, the defaults and the name."""
    return harness.TrainSpec(
        name=MODEL_NAMES[target],
        help=description,
        config_class=DdpmTrainConfig,
        score=SCORE,
        loop=train_loop,
        prepare=functools.partial(prepare, target),
        card=card,
        summary=sample_summary,
        configure=functools.partial(ddpm_config, target),
        flags=(REAL_COUNT, harness.Flag("--image-size", 0, "side of the DDPM's images (0 = its default)")),
    )


SPECS: dict[str, harness.TrainSpec[DdpmTrainConfig]] = {
    "mask": _spec("mask", "mask_blend: DDPM over the few real defect masks"),
    "image": _spec("image", "conditioned_ddpm: DDPM over normal product surfaces"),
}


def train_ddpm(settings: Settings, config: DdpmTrainConfig) -> ModelVersion:
    """Train on Ray and publish the best checkpoint as the next version of `MODEL_NAMES[config.target]`."""
    if config.target not in SPECS:
        raise ValueError(f"target must be 'mask' or 'image', got {config.target!r}")
    return harness.train_and_publish(SPECS[config.target], settings, config)

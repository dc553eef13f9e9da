"""Ray Train for approach B's conditioning encoder: `twinray train defect-encoder`.

The published normal-manifold DDPM is loaded by version and FROZEN; only the DefectEncoder
(twinray.shared.models.defect_encoder.network, ControlNet-style residuals into the UNet's skips) learns, from the
FEW real defect images and their exact masks. The loss is Ho et al.'s L_simple on the defect images,
predicted by the frozen UNet plus the encoder's residuals (`conditioned_loss`); the defect image is
its own normal context, which the encoder reads only outside the mask.

As for the mask DDPM (training/ddpm.py), scarce data sets the shape of the loop: batches are drawn
with replacement, each image and its mask flipped and turned by the SAME symmetry of the square, an
epoch is a fixed number of steps, and the weights published are an EMA of the trained ones. The
held-out score is minus the conditioned loss on `val_split` at a fixed draw of t and noise; next to
it stands the frozen DDPM's own loss on that draw (the encoder's zero-initialised outputs make an
untrained encoder exactly that), so the card says how much the encoder explains that "normal" does not.
"""

from __future__ import annotations

import dataclasses
import io
import os
import time
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch

from twinray.shared.data.augmentation import augmented_batch
from twinray.shared.data.products.dataset import ProductArrays, read_product_manifest, read_product_split
from twinray.shared.models.components.diffusion import DiffusionConfig, build_unet, make_scheduler
from twinray.shared.models.defect_encoder.network import DefectEncoder, DefectEncoderConfig, conditioned_loss, inpaint_defect
from twinray.shared.platform.config import Settings
from twinray.shared.platform.ray_runtime import ensure_ray
from twinray.shared.platform.registry import ModelRegistry, ModelVersion
from twinray.shared.platform.storage import open_store
from twinray.training import harness
from twinray.training.ddpm import MODEL_NAMES, SCORE, DiffusionRun, ema_steps, training_images

MODEL_NAME = "defect-encoder"
NORMAL_MANIFOLD = MODEL_NAMES["image"]


@dataclasses.dataclass(frozen=True)
class DefectEncoderTrainConfig(DiffusionRun):
    """`train_split`: the few real defects (images and exact masks)."""

    normal_split: str = "val_normal"  # normal surfaces the card's sample inpaints with `val_split`'s masks
    normal_manifold_version: str = "latest"  # resolved once, before Ray starts, and recorded
    mask_weight: float = 20.0  # weight of the defect pixels in the loss (conditioned_loss); 1 = plain L_simple
    model: DefectEncoderConfig = DefectEncoderConfig()


def defect_pairs(arrays: ProductArrays, size: int, count: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, masks), both (N,1,size,size) float: the images that hold a defect (the first `count`,
    0 = all) in [0, 1] and their masks in {0, 1} (area-resized, then thresholded)."""
    rows = arrays.defect_rows(count)
    subset = dataclasses.replace(arrays, image=arrays.image[rows], mask=arrays.mask[rows])
    if not len(rows):
        raise ValueError("no defect images to train on")
    return training_images(subset, "image", size), training_images(subset, "mask", size)


def augmented_pairs(
    images: torch.Tensor, masks: torch.Tensor, batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`augmented_batch` over image and mask stacked as channels: both get the same pick, flip and turn."""
    batch = augmented_batch(torch.cat([images, masks], dim=1), batch_size, generator)
    return batch[:, :1], batch[:, 1:]


def frozen_normal_manifold(registry: ModelRegistry, version: int) -> tuple[torch.nn.Module, DiffusionConfig]:
    """The published normal-manifold UNet (eval mode, no gradients) and its config."""
    loaded = registry.load(NORMAL_MANIFOLD, version)
    config = DiffusionConfig.from_dict(loaded.config)
    unet = build_unet(config)
    unet.load_state_dict(torch.load(io.BytesIO(loaded.weights), map_location="cpu", weights_only=True))
    return unet.eval().requires_grad_(False), config


def held_out_loss(
    unet: torch.nn.Module,
    encoder: DefectEncoder,
    unet_config: DiffusionConfig,
    images: torch.Tensor,
    masks: torch.Tensor,
    device: torch.device,
    mask_weight: float = 1.0,
) -> float:
    """`conditioned_loss` on `images` at a FIXED draw of t and noise, so epochs compare like for like."""
    scheduler, generator = make_scheduler(unet_config), torch.Generator().manual_seed(1234)
    losses = []
    with torch.no_grad():
        for i in range(0, len(images), 32):
            batch, mask = images[i : i + 32].to(device), masks[i : i + 32].to(device)
            losses.append(conditioned_loss(unet, encoder, scheduler, batch, mask, batch, generator, mask_weight).item())
    return float(np.mean(losses))


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    torch.set_num_threads(min(config["threads"], os.cpu_count() or 1))
    rank = ray.train.get_context().get_world_rank()
    torch.manual_seed(config["seed"])  # same initial weights on every rank
    store = open_store(Settings.from_env(config["settings_env"]))
    device = ray.train.torch.get_device()
    unet, unet_config = frozen_normal_manifold(ModelRegistry(store), config["normal_manifold_version"])
    unet = unet.to(device)
    size = unet_config.image_size
    images, masks = defect_pairs(read_product_split(store, config["dataset"], config["train_split"]), size, config["real_count"])
    val = defect_pairs(read_product_split(store, config["dataset"], config["val_split"]), size) if rank == 0 else None

    encoder_config = DefectEncoderConfig.from_dict(config["model"])
    encoder = ray.train.torch.prepare_model(DefectEncoder(encoder_config, unet_config))
    ema = torch.optim.swa_utils.AveragedModel(
        harness.unwrap(encoder), multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config["ema_decay"])
    )
    # The untrained encoder adds zeros: its held-out loss is the frozen DDPM's own, the baseline.
    weight = config["mask_weight"]
    baseline = held_out_loss(unet, harness.unwrap(encoder).eval(), unet_config, *val, device, weight) if rank == 0 else None
    optimiser = torch.optim.AdamW(encoder.parameters(), lr=config["learning_rate"])
    total = config["epochs"] * config["steps_per_epoch"]
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config["learning_rate"], total_steps=total, pct_start=0.1)
    scheduler = make_scheduler(unet_config)
    draws = torch.Generator().manual_seed(config["seed"] * 1000 + rank)

    def step_loss() -> torch.Tensor:
        batch, mask = (t.to(device) for t in augmented_pairs(images, masks, config["batch_size"], draws))
        return conditioned_loss(unet, encoder, scheduler, batch, mask, batch, draws, weight)

    for epoch in range(config["epochs"]):
        encoder.train()
        started = time.time()
        train_loss = ema_steps(encoder, ema, optimiser, schedule, config["steps_per_epoch"], device, step_loss)
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "epoch_seconds": time.time() - started,
            "training_images": len(images),
        }
        if rank == 0:
            metrics["val_loss"] = held_out_loss(unet, ema.module.eval(), unet_config, *val, device, weight)
            metrics["val_loss_frozen_ddpm"] = baseline
            metrics[SCORE] = -metrics["val_loss"]
            print(
                f"[{MODEL_NAME}] epoch {epoch + 1}/{config['epochs']} loss {metrics['train_loss']:.4f} "
                f"held-out loss (EMA) {metrics['val_loss']:.4f} vs frozen DDPM alone {baseline:.4f} "
                f"({metrics['epoch_seconds']:.0f}s, {len(images)} defects)",
                flush=True,
            )
        harness.save_checkpoint({"model": ema.module.state_dict(), "epoch": epoch + 1}, metrics)


def _inpaint_summary(
    unet: torch.nn.Module,
    encoder: DefectEncoder,
    unet_config: DiffusionConfig,
    store: Any,
    config: DefectEncoderTrainConfig,
) -> dict[str, float]:
    """What DDIM-20 inpainting with the published encoder does to 4 held-out normal surfaces under 4
    held-out real masks, beside plain RePaint with the frozen DDPM: mean |change| inside the masks."""
    size = unet_config.image_size
    _, masks = defect_pairs(read_product_split(store, config.dataset, config.val_split), size)
    normals = training_images(read_product_split(store, config.dataset, config.normal_split), "image", size)
    count = min(4, len(masks), len(normals))
    normal, mask = normals[:count], masks[:count]
    inside = mask.sum().clamp(min=1.0)
    change = {}
    for key, steer in (("sample_change_in_mask", encoder), ("sample_change_in_mask_repaint", None)):
        out = inpaint_defect(unet, steer, unet_config, normal, mask, steps=20, sampler="ddim", seed=0)
        change[key] = float(((out - normal).abs() * mask).sum() / inside)
    return change


def train_defect_encoder(settings: Settings, config: DefectEncoderTrainConfig) -> ModelVersion:
    """Train on Ray, publish the best (EMA) checkpoint as the next `defect-encoder` version.

    The normal-manifold version is resolved once here, so every worker steers the same frozen DDPM;
    it is recorded in the published config, which is all serving needs to rebuild the pair."""
    store = open_store(settings)
    registry = ModelRegistry(store)
    normal_version = registry.resolve(NORMAL_MANIFOLD, config.normal_manifold_version)
    read_product_manifest(store, config.dataset)  # NotFound before Ray starts
    unet, unet_config = frozen_normal_manifold(registry, normal_version)
    ensure_ray(settings)
    loop_config = {**dataclasses.asdict(config), "model": config.model.to_dict(), "normal_manifold_version": normal_version}
    result = harness.fit(
        train_loop,
        loop_config=loop_config,
        settings=settings,
        run_name=f"{MODEL_NAME}-{int(time.time())}",
        workers=config.workers,
        use_gpu=config.use_gpu,
        score_metric=SCORE,
    )
    state, metrics = harness.best_state(result, SCORE)
    published_config = {
        "encoder": config.model.to_dict(),
        "unet": unet_config.to_dict(),
        "normal_manifold_version": normal_version,
    }
    encoder = DefectEncoder(config.model, unet_config)
    encoder.load_state_dict(state["model"])
    summary = _inpaint_summary(unet, encoder.eval(), unet_config, store, config)
    return harness.publish(
        registry,
        MODEL_NAME,
        state_dict=state["model"],
        config=published_config,
        metrics={**{k: v for k, v in metrics.items() if isinstance(v, (int, float))}, **summary},
        training={
            **loop_config,
            "normal_manifold": {"name": NORMAL_MANIFOLD, "version": normal_version},
            "best_epoch": state["epoch"],
            "ray_run": result.path,
        },
        card=(
            f"# {MODEL_NAME}\n\nControlNet-style conditioning encoder (Zhang et al. 2023; channel divisor "
            f"{config.model.channel_divisor}, {config.model.blocks_per_level} block(s) per level) steering the FROZEN "
            f"`{NORMAL_MANIFOLD}` v{normal_version} DDPM ({unet_config.image_size}px, channels {list(unet_config.channels)}) "
            f"to draw a defect inside a given mask; RePaint-style inpainting keeps the normal image outside it.\n"
            f"Trained on {metrics.get('training_images', '?')} real defect images of `{config.dataset}`/{config.train_split} "
            f"with their masks (8-fold flip/turn augmentation, image and mask alike; defect pixels weigh {config.mask_weight}x "
            f"in the loss), {config.epochs} epochs of "
            f"{config.steps_per_epoch} steps, {config.workers} Ray Train worker(s), EMA {config.ema_decay}.\n"
            f"Best epoch {state['epoch']} by held-out conditioned DDPM loss on `{config.val_split}`: "
            f"{metrics.get('val_loss', float('nan')):.4f} (the frozen DDPM alone: "
            f"{metrics.get('val_loss_frozen_ddpm', float('nan')):.4f}). DDIM-20 inpainting of 4 `{config.normal_split}` "
            f"surfaces under held-out masks, mean |change| inside the mask: {summary['sample_change_in_mask']:.4f} "
            f"(plain RePaint without the encoder: {summary['sample_change_in_mask_repaint']:.4f}).\n"
        ),
    )

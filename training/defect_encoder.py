"""Ray Train for `conditioned_ddpm`'s encoder: `twinray train defect-encoder`.

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
import time
from typing import Any

import numpy as np
import ray.train.torch
import torch

from twinray.shared.data.augmentation import augmented_batch
from twinray.shared.data.products.dataset import ProductArrays, read_product_manifest, read_product_split
from twinray.shared.models.components.diffusion import DiffusionConfig, build_unet, make_scheduler
from twinray.shared.models.defect_encoder.network import DefectEncoder, DefectEncoderConfig, conditioned_loss, inpaint_defect
from twinray.shared.platform.config import Settings
from twinray.shared.platform.registry import ModelRegistry, ModelVersion
from twinray.shared.platform.storage import ArtifactStore
from twinray.training import harness
from twinray.training.ddpm import MODEL_NAMES, REAL_COUNT, SCORE, DiffusionRun, ema_steps, training_images

MODEL_NAME = "defect-encoder"
NORMAL_MANIFOLD = MODEL_NAMES["image"]


@dataclasses.dataclass(frozen=True)
class DefectEncoderTrainConfig(DiffusionRun):
    """`train_split`: the few real defects (images and exact masks)."""

    normal_split: str = "val_normal"  # normal surfaces the card's sample inpaints with `val_split`'s masks
    normal_manifold_version: int | str = "latest"  # resolved to its number once, before Ray starts, and recorded
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


def train_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    worker = harness.worker_context(loop_config, DefectEncoderTrainConfig)
    config, device = worker.config, worker.device
    torch.manual_seed(worker.shared_seed("weights"))  # same initial weights on every rank
    unet, unet_config = frozen_normal_manifold(ModelRegistry(worker.store), config.normal_manifold_version)
    unet = unet.to(device)
    size = unet_config.image_size
    images, masks = defect_pairs(read_product_split(worker.store, config.dataset, config.train_split), size, config.real_count)
    val = defect_pairs(read_product_split(worker.store, config.dataset, config.val_split), size) if worker.is_rank0 else None

    encoder = ray.train.torch.prepare_model(DefectEncoder(config.model, unet_config))
    ema = torch.optim.swa_utils.AveragedModel(
        harness.unwrap(encoder), multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema_decay)
    )
    # The untrained encoder adds zeros: its held-out loss is the frozen DDPM's own, the baseline.
    weight = config.mask_weight
    baseline = held_out_loss(unet, harness.unwrap(encoder).eval(), unet_config, *val, device, weight) if worker.is_rank0 else None
    optimiser = torch.optim.AdamW(encoder.parameters(), lr=config.learning_rate)
    total = config.epochs * config.steps_per_epoch
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.learning_rate, total_steps=total, pct_start=0.1)
    scheduler = make_scheduler(unet_config)
    draws = worker.rank_generator("batches")

    def step_loss() -> torch.Tensor:
        batch, mask = (t.to(device) for t in augmented_pairs(images, masks, config.batch_size, draws))
        return conditioned_loss(unet, encoder, scheduler, batch, mask, batch, draws, weight)

    for epoch in range(config.epochs):
        encoder.train()
        started = time.time()
        train_loss = ema_steps(encoder, ema, optimiser, schedule, config.steps_per_epoch, device, step_loss)
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "epoch_seconds": time.time() - started,
            "training_images": len(images),
        }
        if worker.is_rank0:
            metrics["val_loss"] = held_out_loss(unet, ema.module.eval(), unet_config, *val, device, weight)
            metrics["val_loss_frozen_ddpm"] = baseline
            metrics[SCORE] = -metrics["val_loss"]
            print(
                f"[{MODEL_NAME}] epoch {epoch + 1}/{config.epochs} loss {metrics['train_loss']:.4f} "
                f"held-out loss (EMA) {metrics['val_loss']:.4f} vs frozen DDPM alone {baseline:.4f} "
                f"({metrics['epoch_seconds']:.0f}s, {len(images)} defects)",
                flush=True,
            )
        harness.save_checkpoint(ema.module.state_dict(), epoch + 1, metrics)


def prepare(store: ArtifactStore, config: DefectEncoderTrainConfig) -> harness.Prepared[DefectEncoderTrainConfig]:
    """The normal-manifold version is resolved once here, so every worker steers the same frozen DDPM;
    it is recorded in the published config, which is all serving needs to rebuild the pair."""
    registry = ModelRegistry(store)
    normal_version = registry.resolve(NORMAL_MANIFOLD, config.normal_manifold_version)
    read_product_manifest(store, config.dataset)  # NotFound before Ray starts
    _, unet_config = frozen_normal_manifold(registry, normal_version)
    return harness.Prepared(
        dataclasses.replace(config, normal_manifold_version=normal_version),
        published_config={
            "encoder": config.model.to_dict(),
            "unet": unet_config.to_dict(),
            "normal_manifold_version": normal_version,
        },
        training={"normal_manifold": {"name": NORMAL_MANIFOLD, "version": normal_version}},
    )


def inpaint_summary(store: ArtifactStore, config: DefectEncoderTrainConfig, weights: dict[str, torch.Tensor]) -> dict[str, float]:
    """What DDIM-20 inpainting with the published encoder does to 4 held-out normal surfaces under 4
    held-out real masks, beside plain RePaint with the frozen DDPM: mean |change| inside the masks."""
    unet, unet_config = frozen_normal_manifold(ModelRegistry(store), config.normal_manifold_version)
    encoder = DefectEncoder(config.model, unet_config)
    encoder.load_state_dict(weights)
    size = unet_config.image_size
    _, masks = defect_pairs(read_product_split(store, config.dataset, config.val_split), size)
    normals = training_images(read_product_split(store, config.dataset, config.normal_split), "image", size)
    count = min(4, len(masks), len(normals))
    normal, mask = normals[:count], masks[:count]
    inside = mask.sum().clamp(min=1.0)
    change = {}
    for key, steer in (("sample_change_in_mask", encoder.eval()), ("sample_change_in_mask_repaint", None)):
        out = inpaint_defect(unet, steer, unet_config, normal, mask, steps=20, sampler="ddim", seed=0)
        change[key] = float(((out - normal).abs() * mask).sum() / inside)
    return change


def card(run: harness.Trained[DefectEncoderTrainConfig]) -> str:
    """What the published encoder steers, what it learnt from, and how much it changes inside a mask."""
    config, metrics, summary, unet = run.config, run.metrics, run.summary, run.prepared.published_config["unet"]
    return (
        f"# {MODEL_NAME}\n\nControlNet-style conditioning encoder (Zhang et al. 2023; channel divisor "
        f"{config.model.channel_divisor}, {config.model.blocks_per_level} block(s) per level) steering the FROZEN "
        f"`{NORMAL_MANIFOLD}` v{config.normal_manifold_version} DDPM ({unet['image_size']}px, channels {list(unet['channels'])}) "
        f"to draw a defect inside a given mask; RePaint-style inpainting keeps the normal image outside it.\n"
        f"Trained on {metrics.get('training_images', '?')} real defect images of `{config.dataset}`/{config.train_split} "
        f"with their masks (8-fold flip/turn augmentation, image and mask alike; defect pixels weigh {config.mask_weight}x "
        f"in the loss), {config.epochs} epochs of "
        f"{config.steps_per_epoch} steps, {config.workers} Ray Train worker(s), EMA {config.ema_decay}.\n"
        f"Best epoch {run.best_epoch} by held-out conditioned DDPM loss on `{config.val_split}`: "
        f"{metrics.get('val_loss', float('nan')):.4f} (the frozen DDPM alone: "
        f"{metrics.get('val_loss_frozen_ddpm', float('nan')):.4f}). DDIM-20 inpainting of 4 `{config.normal_split}` "
        f"surfaces under held-out masks, mean |change| inside the mask: {summary['sample_change_in_mask']:.4f} "
        f"(plain RePaint without the encoder: {summary['sample_change_in_mask_repaint']:.4f}).\n"
    )


SPEC = harness.TrainSpec(
    name=MODEL_NAME,
    help="conditioned_ddpm: encoder steering the frozen normal-manifold DDPM to draw defects",
    config_class=DefectEncoderTrainConfig,
    score=SCORE,
    loop=train_loop,
    prepare=prepare,
    card=card,
    summary=inpaint_summary,
    flags=(REAL_COUNT, harness.Flag("--normal-manifold-version", "latest", "the frozen DDPM it steers")),
)


def train_defect_encoder(settings: Settings, config: DefectEncoderTrainConfig) -> ModelVersion:
    """Train on Ray and publish the best (EMA) checkpoint as the next `defect-encoder` version."""
    return harness.train_and_publish(SPEC, settings, config)

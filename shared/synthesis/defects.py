"""Drawing synthetic defects with exact masks, shared by the DefectGeneration service and the
downstream evaluation (shared/evaluation/defect_augmentation.py): masks from the mask DDPM, normal images to
draw on, and the two ways of drawing a defect inside a mask (METHODS, as DefectMethod names them).

- `mask_blend` (approach A of the original work: mask manifold + blending): the appearance of one of
  the few real defects is blended into the sampled mask (twinray.shared.synthesis.blending).
- `conditioned_ddpm` (approach B: normal manifold + conditioning encoder): the frozen normal-manifold
  DDPM inpaints the mask, steered by the defect encoder (twinray.shared.models.defect_encoder.network;
  no encoder = plain RePaint).
Both keep every pixel outside the mask exactly as it was on the normal image.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from twinray.shared.data.products.dataset import read_product_split
from twinray.shared.models.components.diffusion import DiffusionConfig, Sampler, binarise, build_unet, nonempty, sample
from twinray.shared.models.defect_encoder.network import encoder_from_weights, inpaint_defect
from twinray.shared.platform.errors import InvalidInput, NotFound
from twinray.shared.platform.imaging.unit_range import to_unit
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage.base import ArtifactStore
from twinray.shared.synthesis.blending import DefectAppearance, blend_defect, defect_appearance

METHODS = ("mask_blend", "conditioned_ddpm")


@dataclasses.dataclass
class DefectGenerators:
    """The published models both methods sample with, already loaded by the caller."""

    mask_unet: nn.Module
    mask_config: DiffusionConfig
    normal_unet: nn.Module | None = None  # conditioned_ddpm only
    normal_config: DiffusionConfig | None = None
    encoder: nn.Module | None = None  # None = plain RePaint with the normal-manifold DDPM
    versions: dict[str, str] = dataclasses.field(default_factory=dict)  # for the report, e.g. {"defect-masks": "3"}
    # mask_blend's sources: the real defects the mask DDPM was trained on (empty when their dataset is gone)
    appearances: list[DefectAppearance] = dataclasses.field(default_factory=list)

    def to(self, device: torch.device | str) -> DefectGenerators:
        """Every network moved to `device` (in place); returns self."""
        for network in (self.mask_unet, self.normal_unet, self.encoder):
            if network is not None:
                network.to(device)
        return self


def training_appearances(store: ArtifactStore, training: dict) -> list[DefectAppearance]:
    """The appearances of the real defects a mask DDPM was trained on (its `training.json`: dataset,
    train_split, real_count: the first `real_count` images with a defect); [] if that data is gone."""
    try:
        arrays = read_product_split(store, training["dataset"], training["train_split"])
    except (NotFound, KeyError):
        return []
    rows = arrays.defect_rows(training.get("real_count", 0))
    return real_appearances(to_unit(arrays.image[rows]), arrays.mask[rows])


def load_generators(
    store: ArtifactStore, *, masks: str = "latest", normal: str = "", encoder: str = "latest"
) -> DefectGenerators:
    """The published models by version ("latest" or a number), and mask_blend's real appearances.

    The normal-manifold DDPM is the one the encoder was trained to steer (recorded in its config)
    unless `normal` names one; an encoder steering another DDPM than its own draws noise. With no
    `defect-encoder` published (or `encoder=""`), conditioned_ddpm is plain RePaint with the latest (or
    the named) normal-manifold DDPM, and the report says so."""
    registry = ModelRegistry(store)

    def ddpm(name: str, version: str) -> tuple[nn.Module, DiffusionConfig, int]:
        loaded = registry.load(name, version)
        config = DiffusionConfig.from_dict(loaded.config)
        unet = build_unet(config)
        unet.load_state_dict(torch.load(io.BytesIO(loaded.weights), map_location="cpu", weights_only=True))
        return unet.eval(), config, loaded.version

    steering, versions = None, {}
    if encoder and registry.versions("defect-encoder"):
        loaded = registry.load("defect-encoder", encoder)
        steering = encoder_from_weights(loaded.config, loaded.weights)
        versions["defect-encoder"] = str(loaded.version)
        normal = normal or str(loaded.config["normal_manifold_version"])
    mask_unet, mask_config, mask_version = ddpm("defect-masks", masks)
    normal_unet, normal_config, normal_version = ddpm("normal-manifold", normal or "latest")
    versions.update({"defect-masks": str(mask_version), "normal-manifold": str(normal_version)})
    appearances = training_appearances(store, json.loads(registry.read_file("defect-masks", mask_version, "training.json")))
    return DefectGenerators(mask_unet, mask_config, normal_unet, normal_config, steering, versions, appearances)


@dataclasses.dataclass(frozen=True)
class SyntheticSet:
    image: np.ndarray  # float32 (N,S,S) in [0, 1]
    mask: np.ndarray  # bool (N,S,S), non-empty
    normal_index: np.ndarray  # int (N,): the train_normal image each one was drawn on


def device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _resize_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """Binary (N,1,m,m) -> binary (N,1,size,size): bilinear up / area down, then > 0.5."""
    if masks.shape[-1] == size:
        return masks
    mode = {"mode": "bilinear", "align_corners": False} if size > masks.shape[-1] else {"mode": "area"}
    return binarise(F.interpolate(masks.float(), size=(size, size), **mode))


def sample_masks(
    unet: nn.Module,
    config: DiffusionConfig,
    count: int,
    size: int,
    *,
    seed: int = 0,
    sampler: Sampler = "ddim",
    steps: int | None = 50,
    threshold: float = 0.5,
    min_pixels: int = 1,
    batch: int = 32,
    max_draws: int = 20,
) -> np.ndarray:
    """`count` binary masks (count, size, size) bool from the mask DDPM: sampled, binarised at
    `threshold`, resized, and kept only with at least `min_pixels` pixels; empty ones are drawn again
    (next seed) up to `max_draws` batches, then InvalidInput (the model makes no usable masks)."""
    unet.eval()
    kept: list[torch.Tensor] = []
    for draw in range(max_draws + math.ceil(count / batch)):
        have = sum(len(k) for k in kept)
        if have >= count:
            break
        drawn = sample(unet, config, min(batch, count - have), steps=steps, sampler=sampler, seed=seed + draw).cpu()
        masks = _resize_masks(binarise(drawn, threshold), size)
        kept.append(masks[nonempty(masks, min_pixels)])
    masks = torch.cat(kept)[:count] if kept else torch.zeros(0)
    if len(masks) < count:
        raise InvalidInput(f"the mask DDPM gave {len(masks)} non-empty masks of {count} asked for ({min_pixels}+ pixels)")
    return masks[:, 0].bool().numpy()


def pick_normals(count: int, available: int, seed: int) -> np.ndarray:
    """Which normal image each synthetic defect goes on: a seeded permutation, repeated as needed."""
    rng = np.random.default_rng(seed)
    rounds = [rng.permutation(available) for _ in range(math.ceil(count / available))]
    return np.concatenate(rounds)[:count]


def real_appearances(images: np.ndarray, masks: np.ndarray) -> list[DefectAppearance]:
    """mask_blend's sources: the appearance of each real defect (float images (k,S,S), masks)."""
    return [defect_appearance(image, mask) for image, mask in zip(images, masks)]


def synthesize_mask_blend(
    normals: np.ndarray,
    masks: np.ndarray,
    normal_index: np.ndarray,
    appearances: Sequence[DefectAppearance],
    *,
    feather_px: float = 0.0,
) -> SyntheticSet:
    """mask_blend: mask i drawn on normals[normal_index[i]] with the appearance of real defect i mod k;
    pixels outside the mask are the normal image's, exactly. The appearances are used as they are, in
    turn: varying or matching them looked more real and helped less (docs/decisions/0203-real-appearances-as-they-are.md)."""
    if not appearances:
        raise InvalidInput("mask_blend needs at least one real defect appearance")
    images = [
        blend_defect(normals[n], mask, appearances[i % len(appearances)], feather_px=feather_px)
        for i, (mask, n) in enumerate(zip(masks, normal_index))
    ]
    return SyntheticSet(np.stack(images).astype(np.float32), masks.copy(), normal_index.copy())


def synthesize_conditioned_ddpm(
    unet: nn.Module,
    config: DiffusionConfig,
    encoder: nn.Module | None,
    normals: np.ndarray,
    masks: np.ndarray,
    normal_index: np.ndarray,
    *,
    seed: int = 0,
    sampler: Sampler = "ddim",
    steps: int | None = 50,
    batch: int = 16,
) -> SyntheticSet:
    """conditioned_ddpm: mask i inpainted on normals[normal_index[i]] by the normal-manifold DDPM steered by
    `encoder` (None: plain RePaint). When the DDPM's size differs from the images', it works on the
    image area-resized to its size with the mask dilated to cover every touched pixel, and its result
    is resized back; the full-size mask then decides, so pixels outside it stay exactly normal."""
    unet.eval()
    if encoder is not None:
        encoder.eval()
    device, size, model_size = device_of(unet), masks.shape[-1], config.image_size
    images = []
    for number, start in enumerate(range(0, len(masks), batch)):
        normal = torch.from_numpy(normals[normal_index[start : start + batch]]).float()[:, None].to(device)
        mask = torch.from_numpy(masks[start : start + batch]).float()[:, None].to(device)
        small_normal, small_mask = normal, mask
        if model_size != size:
            small_normal = F.interpolate(normal, size=(model_size, model_size), mode="area")
            small_mask = (F.interpolate(mask, size=(model_size, model_size), mode="area") > 0).float()
        drawn = inpaint_defect(unet, encoder, config, small_normal, small_mask, steps=steps, sampler=sampler, seed=seed + number)
        if model_size != size:
            drawn = F.interpolate(drawn, size=(size, size), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
        images.append(torch.where(mask.bool(), drawn, normal)[:, 0].cpu())
    return SyntheticSet(torch.cat(images).numpy().astype(np.float32), masks.copy(), normal_index.copy())

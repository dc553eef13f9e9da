"""`twinray eval defect-augmentation`, the downstream proof of synthetic defects: does a defect
segmenter trained on k real defects find held-out defects better when N synthetic defects drawn by
`mask_blend` (approach A of the original work) or `conditioned_ddpm` (approach B) are added?

Protocol, in one process (no Ray: every row is a small training on one machine):
- Real data: the first k images of `train_defect` (the same "first k" as DdpmTrainConfig.real_count),
  every image of `train_normal` as defect-free examples (empty masks), `val_defect` + `val_normal`
  for choosing each row's batch share, and `test_defect` + `test_normal` held out for scoring only
  (nothing is selected on them; the generators' checkpoints are chosen on the val splits too).
- Synthetic data: N masks sampled from the published mask DDPM (DDIM by default), binarised, kept
  only if non-empty, resized to the image size; each is put on a seeded pick of a `train_normal`
  image. `mask_blend` renders a real defect's appearance inside it (twinray.shared.synthesis.blending;
  the source defect is one of the k, in turn); `conditioned_ddpm` inpaints it with the
  normal-manifold DDPM steered by the defect encoder (twinray.shared.models.defect_encoder.network;
  encoder None = plain RePaint). Both get the SAME masks on the SAME normal images, so they differ
  only in how the defect is drawn.
- Segmenter: MONAI's residual U-Net (twinray.shared.models.segmentation.network.AnatomySegmenter, two classes),
  trained from scratch with one budget for every row: the same initial weights and the same number of
  optimiser steps (epochs x steps_per_epoch, batches drawn with replacement from the row's pool, flips
  and quarter turns), DiceCE loss, Adam. The weights after the last step are scored.
- Selection, the same for every row: each row has one knob, the share of each batch drawn from its
  defect pool (real_only: `defect_fraction`; a synthetic row: `synthetic_fraction`, the synthetic
  part of the defect half). Each candidate of `shares` trains `repeats` segmenters (seeds
  budget.seed + r); the candidate with the best mean IoU on the val splits is the row's, and its
  test scores (means over the repeats, with the IoU's spread) are reported.
- Scores: IoU of the defect class over the whole test set, mean per-image IoU over the defect images,
  pixel AUROC, false alarms on normal parts (twinray.shared.evaluation.defect_metrics); the relative gain of each
  synthetic row over real_only; realism = KID between a row's training defects (the k real ones, or
  the N synthetic ones) and held-out real defect crops, and diversity, both in the features of a crop
  classifier trained here on real-defect vs normal crops.

The report has the shared shape (twinray.shared.evaluation.report). A row is "<row>@k=<k>": real_only,
real_plus_mask_blend, real_plus_conditioned_ddpm at each k, plus "held_out_real" (the diversity of
the test defects). Metrics: iou, mean_image_iou, pixel_auroc, normal_false_alarm_rate (mean and sd
over the repeats, n = repeats); <metric>_gain for iou, mean_image_iou and pixel_auroc ((row -
real_only) / real_only of the means at the same k); kid and kid_subset_sd (KID's spread over its
random feature subsets, not over runs); feature_distance and ssim_diversity. The share each row chose
and its val IoU per candidate are in protocol.selection.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import nn
from tqdm import tqdm

from twinray.shared.data.augmentation import augmented_batch
from twinray.shared.data.products.dataset import read_product_split
from twinray.shared.evaluation.defect_metrics import (
    CropClassifier,
    FeatureExtractor,
    defect_crops,
    defect_segmentation_scores,
    feature_diversity,
    kernel_inception_distance,
    random_crops,
    ssim_diversity,
)
from twinray.shared.evaluation.report import Stat, evaluation_report, over_runs, single
from twinray.shared.models.components.diffusion import Sampler
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig
from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.imaging.unit_range import to_unit
from twinray.shared.platform.storage.base import ArtifactStore
from twinray.shared.synthesis.defects import (
    METHODS,
    DefectGenerators,
    SyntheticSet,
    device_of,
    pick_normals,
    real_appearances,
    sample_masks,
    synthesize_conditioned_ddpm,
    synthesize_mask_blend,
)

ROWS = {"real_only": None, **{f"real_plus_{method}": method for method in METHODS}}  # row -> the method it adds
GAIN_METRICS = ("iou", "mean_image_iou", "pixel_auroc")
SHARE_KNOBS = {"real_only": "segmenter.defect_fraction", "real_plus_<method>": "segmenter.synthetic_fraction"}
REALISM_MEASURE = "KID (torchmetrics KernelInceptionDistance, custom feature extractor) against crops of test_defect"
FEATURE_EXTRACTOR = (
    "CropClassifier (twinray.shared.evaluation.defect_metrics): a 3-level CNN trained in this run to tell crops around the "
    "first max(k) real train defects from random train_normal crops; features = global average of its "
    "last convolution block (no pretrained Inception weights can be downloaded here)"
)
DIVERSITY_MEASURES = {
    "feature_distance": "mean pairwise Euclidean distance of unit-normalised CropClassifier features (0..2)",
    "ssim_diversity": "1 - mean pairwise SSIM of the defect crops (torchmetrics; MS-SSIM needs 160+ px)",
}


@dataclasses.dataclass(frozen=True)
class SegmenterBudget:
    """One training of the defect segmenter; every row of a report uses the same one, but for the
    share the row tunes on the val splits (AugmentationEvalConfig.shares)."""

    channels: tuple[int, ...] = (16, 32, 64)
    epochs: int = 20
    steps_per_epoch: int = 25
    batch_size: int = 8
    learning_rate: float = 1e-3
    seed: int = 0
    # Share of each batch drawn from the images WITH a defect (the rest from normal ones): a few real
    # defects among many normals are otherwise almost never seen (docs/decisions/0201-defect-batch-shares.md).
    defect_fraction: float = 0.5
    # Share of those defect images drawn from the SYNTHETIC ones, when a row has them, so the few real
    # ones are not drowned by the generator's (docs/decisions/0201-defect-batch-shares.md).
    synthetic_fraction: float = 0.5


@dataclasses.dataclass(frozen=True)
class AugmentationEvalConfig:
    dataset: str = "products"
    real_counts: tuple[int, ...] = (5, 20)  # the k of "k real defects"
    synthetic_count: int = 100  # N synthetic defects added per synthetic row
    methods: tuple[str, ...] = METHODS
    sampler: Sampler = "ddim"
    sample_steps: int | None = 50  # DDIM steps (None with "ddpm": all train timesteps)
    mask_threshold: float = 0.5
    min_mask_pixels: int = 4  # at image size; smaller sampled masks are drawn again
    seed: int = 0  # masks, normal picks, appearance order, conditioned_ddpm's noise, crops, KID subsets
    segmenter: SegmenterBudget = SegmenterBudget()
    # Candidates for each row's batch share (real_only: defect_fraction, synthetic rows: synthetic_fraction),
    # chosen on the val splits: the share moves the gains too much to fix by hand
    # (docs/decisions/0202-batch-share-chosen-on-val.md).
    shares: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)
    repeats: int = 1  # segmenters per candidate (seeds segmenter.seed + r); scores are their mean
    validation: tuple[str, str] = ("val_defect", "val_normal")
    crop_size: int = 0  # realism/diversity crops; 0 = half the image size
    classifier_epochs: int = 10
    classifier_steps_per_epoch: int = 20
    kid_subsets: int = 100

    def validate(self, real_available: int) -> None:
        if not self.real_counts or any(k < 1 for k in self.real_counts):
            raise InvalidInput(f"real_counts must be positive, got {self.real_counts}")
        if max(self.real_counts) > real_available:
            raise InvalidInput(f"k = {max(self.real_counts)} real defects asked for, the train_defect split has {real_available}")
        if self.synthetic_count < 2:
            raise InvalidInput(f"synthetic_count must be >= 2 (KID and diversity need pairs), got {self.synthetic_count}")
        if not set(self.methods) <= set(METHODS) or not self.methods:
            raise InvalidInput(f"methods must be a non-empty subset of {METHODS}, got {self.methods}")
        for name in ("defect_fraction", "synthetic_fraction"):
            if not 0.0 <= getattr(self.segmenter, name) <= 1.0:
                raise InvalidInput(f"segmenter {name} must be in [0, 1], got {getattr(self.segmenter, name)}")
        if not self.shares or not all(0.0 < share <= 1.0 for share in self.shares):
            raise InvalidInput(f"shares must be non-empty and each in (0, 1], got {self.shares}")
        if self.repeats < 1:
            raise InvalidInput(f"repeats must be >= 1, got {self.repeats}")


# --- the defect segmenter ---------------------------------------------------------------------------


def _pool(images: np.ndarray, masks: np.ndarray) -> torch.Tensor:
    """(N,2,S,S): image and mask stacked as channels, so a flip or turn moves both."""
    return torch.stack(
        [torch.from_numpy(np.asarray(images, np.float32)), torch.from_numpy(np.asarray(masks, bool)).float()], dim=1
    )


def train_defect_segmenter(
    images: np.ndarray,
    masks: np.ndarray,
    budget: SegmenterBudget,
    device: torch.device | str = "cpu",
    *,
    synthetic: tuple[np.ndarray, np.ndarray] | None = None,
) -> AnatomySegmenter:
    """A two-class segmenter trained from scratch on float images (N,S,S) in [0,1] and bool masks
    (empty for normal images). Each batch is `budget.defect_fraction` defect images, of which
    `budget.synthetic_fraction` are drawn from the `synthetic` (images, masks) when given.
    Deterministic given `budget.seed` on the CPU (initial weights and batches; batches are drawn on
    the CPU, so a GPU run sees the same ones, up to kernel rounding)."""
    if len(images) != len(masks) or not len(images):
        raise InvalidInput(f"need matching, non-empty images and masks, got {len(images)} and {len(masks)}")
    if synthetic is not None and (len(synthetic[0]) != len(synthetic[1]) or not len(synthetic[0])):
        raise InvalidInput(
            f"need matching, non-empty synthetic images and masks, got {len(synthetic[0])} and {len(synthetic[1])}"
        )
    size = images.shape[-1]
    torch.manual_seed(budget.seed)
    model = AnatomySegmenter(SegmenterConfig(num_classes=2, input_size=size, channels=budget.channels)).to(device)
    data = _pool(images, masks)
    generator = torch.Generator().manual_seed(budget.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=budget.learning_rate)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    has_defect = data[:, 1].flatten(1).any(dim=1)
    defects, normals = data[has_defect], data[~has_defect]
    made = _pool(*synthetic) if synthetic is not None else defects[:0]
    n_defect = (
        budget.batch_size if not len(normals) else min(budget.batch_size, round(budget.batch_size * budget.defect_fraction))
    )
    if not len(defects) and not len(made):
        n_defect = 0
    n_made = n_defect if not len(defects) else round(n_defect * budget.synthetic_fraction) if len(made) else 0
    n_real = n_defect - n_made
    draws = ((defects, n_real), (made, n_made), (normals, budget.batch_size - n_real - n_made))
    model.train()
    for _ in range(budget.epochs * budget.steps_per_epoch):
        batch = torch.cat([augmented_batch(pool, count, generator) for pool, count in draws if count]).to(device)
        loss = loss_fn(model(batch[:, :1]), batch[:, 1:].round())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@torch.no_grad()
def defect_probability(model: nn.Module, images: np.ndarray, batch: int = 32) -> torch.Tensor:
    """P(defect) per pixel (N,S,S) for float images (N,S,S) in [0, 1]."""
    model.eval()
    tensor, device = torch.from_numpy(np.asarray(images, np.float32))[:, None], device_of(model)
    return torch.cat([model(tensor[i : i + batch].to(device)).softmax(dim=1)[:, 1].cpu() for i in range(0, len(tensor), batch)])


def score_segmenter(model: nn.Module, images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    return defect_segmentation_scores(defect_probability(model, images), torch.from_numpy(np.asarray(masks, bool)))


# --- the realism feature network ---------------------------------------------------------------------


def train_crop_classifier(
    defect: torch.Tensor, normal: torch.Tensor, *, epochs: int, steps_per_epoch: int, batch_size: int = 16, seed: int = 0
) -> CropClassifier:
    """CropClassifier trained to tell defect crops (N,1,s,s) from normal crops: balanced batches
    (half each, drawn with replacement, flips and quarter turns), BCE, Adam, fixed seed and steps."""
    torch.manual_seed(seed)
    model = CropClassifier()
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    half = max(batch_size // 2, 1)
    labels = torch.cat([torch.ones(half), torch.zeros(half)])
    model.train()
    for _ in range(epochs * steps_per_epoch):
        crops = torch.cat([augmented_batch(defect, half, generator), augmented_batch(normal, half, generator)])
        loss = F.binary_cross_entropy_with_logits(model(crops), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


# --- choosing each row's share on the val splits ----------------------------------------------------------


def _budget_with_share(budget: SegmenterBudget, synthetic: bool, share: float, repeat: int) -> SegmenterBudget:
    knob = "synthetic_fraction" if synthetic else "defect_fraction"
    return dataclasses.replace(budget, seed=budget.seed + repeat, **{knob: share})


def _mean_scores(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}


def tuned_row(
    train: tuple[np.ndarray, np.ndarray],
    made: tuple[np.ndarray, np.ndarray] | None,
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    config: AugmentationEvalConfig,
    device: torch.device | str,
    bar: tqdm | None = None,
) -> tuple[dict[str, Stat], dict[str, Any]]:
    """One row at one k: every candidate share trains `config.repeats` segmenters on `train` (+ the
    synthetic `made`), scored on `val` and `test`. Returns the best share's (by mean val IoU) test
    metrics over its repeats, and its selection: `share`, `val_iou` and `val_iou_by_share`."""
    candidates = {}
    for share in config.shares:
        val_runs, test_runs = [], []
        for repeat in range(config.repeats):
            budget = _budget_with_share(config.segmenter, made is not None, share, repeat)
            model = train_defect_segmenter(*train, budget, device, synthetic=made)
            val_runs.append(score_segmenter(model, *val))
            test_runs.append(score_segmenter(model, *test))
            if bar is not None:
                bar.update()
        candidates[share] = (_mean_scores(val_runs), test_runs)
    best = max(config.shares, key=lambda share: np.nan_to_num(candidates[share][0]["iou"], nan=-1.0))
    val_scores, test_runs = candidates[best]
    metrics = {key: over_runs([run[key] for run in test_runs]) for key in test_runs[0]}
    selection = {
        "share": best,
        "val_iou": val_scores["iou"],
        "val_iou_by_share": {str(share): candidates[share][0]["iou"] for share in config.shares},
    }
    return metrics, selection


# --- the whole evaluation ------------------------------------------------------------------------------


def row_key(row: str, k: int) -> str:
    """The report's row: `row` trained with the first `k` real defects."""
    return f"{row}@k={k}"


def rows_of(config: AugmentationEvalConfig) -> dict[str, str | None]:
    """The rows `config` asks for (each with the method it adds), real_only first."""
    return {row: method for row, method in ROWS.items() if method is None or method in config.methods}


def _relative(new: float | None, base: float | None) -> float | None:
    if new is None or base is None or not math.isfinite(new) or not math.isfinite(base) or base == 0:
        return None
    return (new - base) / base


def _generators_for(generators: DefectGenerators | Mapping[int, DefectGenerators], k: int) -> DefectGenerators:
    if isinstance(generators, DefectGenerators):
        return generators
    if k not in generators:
        raise InvalidInput(f"no generators given for k = {k} (given for {sorted(generators)})")
    return generators[k]


def _kid_metrics(kid: dict[str, float]) -> dict[str, Stat]:
    return {"kid": single(kid["kid_mean"]), "kid_subset_sd": single(kid["kid_std"])}


def _diversity_metrics(extractor: FeatureExtractor, crops: torch.Tensor, seed: int) -> dict[str, Stat]:
    return {
        "feature_distance": single(feature_diversity(extractor(crops), seed=seed)),
        "ssim_diversity": single(ssim_diversity(crops, seed=seed)),
    }


def _gains(rows: dict[str, dict[str, Stat]], config: AugmentationEvalConfig) -> None:
    """Add each synthetic row's relative gain over real_only at the same k (from the means)."""
    for k in config.real_counts:
        base = rows[row_key("real_only", k)]
        for row in list(rows_of(config))[1:]:
            metrics = rows[row_key(row, k)]
            metrics.update({f"{key}_gain": single(_relative(metrics[key]["mean"], base[key]["mean"])) for key in GAIN_METRICS})


def evaluate_augmentation(
    store: ArtifactStore,
    config: AugmentationEvalConfig,
    generators: DefectGenerators | Mapping[int, DefectGenerators],
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict:
    """The downstream report of `config.dataset` (see the module docstring for its rows and metrics).
    `generators` is one set of published models for every k, or one per k (models trained on only
    those k real defects). `device` is where the segmenters train; the generators sample wherever the
    caller put them. `progress` shows a bar of the segmenter trainings on stderr."""
    started = time.monotonic()
    names = ("train_normal", "train_defect", *config.validation, "test_normal", "test_defect")
    split = {name: read_product_split(store, config.dataset, name) for name in names}
    config.validate(len(split["train_defect"]))
    for method in config.methods:
        for k in config.real_counts:
            chosen = _generators_for(generators, k)
            if method == "conditioned_ddpm" and (chosen.normal_unet is None or chosen.normal_config is None):
                raise InvalidInput("conditioned_ddpm needs the normal-manifold DDPM (normal_unet and normal_config)")
    size = split["train_normal"].image.shape[-1]
    crop = config.crop_size or size // 2
    normals = to_unit(split["train_normal"].image)
    real_images, real_masks = to_unit(split["train_defect"].image), split["train_defect"].mask
    val, test = (
        (np.concatenate([to_unit(split[d].image), to_unit(split[n].image)]), np.concatenate([split[d].mask, split[n].mask]))
        for d, n in (config.validation, ("test_defect", "test_normal"))
    )
    empty = np.zeros_like(split["train_normal"].mask)

    held_out_crops = defect_crops(to_unit(split["test_defect"].image), split["test_defect"].mask, crop)
    k_max = max(config.real_counts)
    classifier = train_crop_classifier(
        defect_crops(real_images[:k_max], real_masks[:k_max], crop),
        random_crops(normals, crop, max(4 * k_max, 64), config.seed),
        epochs=config.classifier_epochs,
        steps_per_epoch=config.classifier_steps_per_epoch,
        seed=config.seed,
    )
    extractor = FeatureExtractor(classifier)

    rows: dict[str, dict[str, Stat]] = {}
    selection: dict[str, dict[str, Any]] = {}
    kid_subset_size: dict[str, int] = {}
    held_out_diversity = _diversity_metrics(extractor, held_out_crops, config.seed)
    cache_conditioned: dict[int, SyntheticSet] = {}
    trainings = len(config.real_counts) * len(rows_of(config)) * len(config.shares) * config.repeats
    bar = tqdm(total=trainings, desc="defect segmenters", unit="run", disable=not progress)
    for k in config.real_counts:
        chosen = _generators_for(generators, k)
        real_k = (real_images[:k], real_masks[:k])
        train = (np.concatenate([real_k[0], normals]), np.concatenate([real_k[1], empty]))  # every row's real pool
        real_kid = None
        if k >= 2:
            real_kid = kernel_inception_distance(
                extractor, held_out_crops, defect_crops(*real_k, crop), subsets=config.kid_subsets, seed=config.seed
            )
        synthetic: dict[str, SyntheticSet] = {}
        masks = sample_masks(
            chosen.mask_unet,
            chosen.mask_config,
            config.synthetic_count,
            size,
            seed=config.seed,
            sampler=config.sampler,
            steps=config.sample_steps,
            threshold=config.mask_threshold,
            min_pixels=config.min_mask_pixels,
        )
        picks = pick_normals(config.synthetic_count, len(normals), config.seed)
        if "mask_blend" in config.methods:
            synthetic["mask_blend"] = synthesize_mask_blend(normals, masks, picks, real_appearances(*real_k))
        if "conditioned_ddpm" in config.methods:  # independent of k unless the models are: drawn once per model set
            if id(chosen) not in cache_conditioned:
                cache_conditioned[id(chosen)] = synthesize_conditioned_ddpm(
                    chosen.normal_unet,
                    chosen.normal_config,
                    chosen.encoder,
                    normals,
                    masks,
                    picks,
                    seed=config.seed,
                    sampler=config.sampler,
                    steps=config.sample_steps,
                )
            synthetic["conditioned_ddpm"] = cache_conditioned[id(chosen)]
        for row, method in rows_of(config).items():
            made = None if method is None else (synthetic[method].image, synthetic[method].mask)
            rows[row_key(row, k)], selection[row_key(row, k)] = tuned_row(train, made, val, test, config, device, bar)
        realism = {"real_only": real_kid} if real_kid is not None else {}
        diversity: dict[str, dict[str, Stat]] = {}
        for method, made in synthetic.items():
            crops = defect_crops(made.image, made.mask, crop)
            realism[f"real_plus_{method}"] = kernel_inception_distance(
                extractor, held_out_crops, crops, subsets=config.kid_subsets, seed=config.seed
            )
            diversity[f"real_plus_{method}"] = _diversity_metrics(extractor, crops, config.seed)
        for row, kid in realism.items():
            rows[row_key(row, k)].update({**_kid_metrics(kid), **diversity.get(row, {})})
            kid_subset_size[row_key(row, k)] = kid["subset_size"]

    bar.close()
    _gains(rows, config)
    rows["held_out_real"] = held_out_diversity
    protocol = {
        "dataset": config.dataset,
        "splits": {
            "train": {"train_defect": f"the first k of {len(split['train_defect'])}", "train_normal": len(normals)},
            "selection": {name: len(split[name]) for name in config.validation},
            "scored": {name: len(split[name]) for name in ("test_defect", "test_normal")},
        },
        "seeds": {
            "segmenter": [config.segmenter.seed + repeat for repeat in range(config.repeats)],
            "synthesis": config.seed,
        },
        "budget": {
            "segmenter": dataclasses.asdict(config.segmenter),
            "segmenter_steps": config.segmenter.epochs * config.segmenter.steps_per_epoch,
            "real_defects": list(config.real_counts),
            "synthetic_defects": config.synthetic_count,
            "train_normal": len(normals),
            "image_size": size,
            "device": str(device),
        },
        "selection": {
            "knob": SHARE_KNOBS,
            "candidates": list(config.shares),
            "criterion": "the best mean IoU on the val splits over the repeats",
            "rows": selection,
        },
        "realism": {
            "measure": REALISM_MEASURE,
            "feature_extractor": FEATURE_EXTRACTOR,
            "crop_size": crop,
            "subsets": config.kid_subsets,
            "subset_size": kid_subset_size,
        },
        "diversity": DIVERSITY_MEASURES,
        "models": {str(k): dict(_generators_for(generators, k).versions) for k in config.real_counts},
        "encoder": {str(k): _generators_for(generators, k).encoder is not None for k in config.real_counts},
        "config": dataclasses.asdict(config),
        "seconds": time.monotonic() - started,
    }
    return evaluation_report(protocol, rows)

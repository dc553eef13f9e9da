"""The detector's training steps and scoring without Ray: one epoch, val and test scores, and a whole
in-process fit. `twinray train detection` runs the same epoch on Ray Train workers; the ablation
(`twinray eval detection`, twinray.training.detection_benchmark) fits in-process on one device, so
it also runs where Ray is not installed (a GPU machine).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterable

import torch
from torch.utils.data import DataLoader

from twinray.shared.data.dataset_io import derived_seed
from twinray.shared.data.phantoms.pathologies import PATHOLOGIES
from twinray.shared.evaluation.detection_metrics import (
    best_threshold_rsna,
    detection_metrics,
    kept_at,
    per_class_map,
    rsna_score,
)
from twinray.shared.models.detection.network import DetectorConfig, LesionDetector, detect
from twinray.training.autocast import autocast
from twinray.training.detection_data import DetectionSplit, DetectionTrainConfig


def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    train: DetectionSplit,
    batches: Iterable[torch.Tensor],
    device: torch.device,
    config: DetectorConfig,
) -> dict[str, float]:
    """One pass over `batches` (row indices of `train`, read as `config`'s variant reads them); the
    mean of each loss and of their total."""
    model.train()
    sums: dict[str, float] = {}
    steps = 0
    for rows in batches:
        inputs = train.inputs(config, rows).to(device)
        targets = [{k: v.to(device) for k, v in train.targets[i].items()} for i in rows.tolist()]
        with autocast(device):
            losses = model(list(inputs), targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # focal-loss spikes early on, from scratch
        optimizer.step()
        scheduler.step()
        for name, value in {**losses, "total": loss}.items():
            sums[name] = sums.get(name, 0.0) + value.item()
        steps += 1
    return {name: value / max(steps, 1) for name, value in sums.items()}


def _predictions(model: LesionDetector, data: DetectionSplit, device: torch.device) -> list[dict[str, torch.Tensor]]:
    return detect(model.to(device), data.inputs(model.config, torch.arange(len(data.image))), device)


def evaluate_split(model: LesionDetector, data: DetectionSplit, device: torch.device) -> dict[str, float]:
    """RSNA score at the confidence threshold best on these images (and that threshold), mAP and AP
    at IoU 0.4 / 0.5 / 0.6 over every prediction, class-agnostic as the RSNA challenge is. For val:
    it chooses the checkpoint and the threshold."""
    images = [(p["boxes"], p["scores"], t["boxes"]) for p, t in zip(_predictions(model, data, device), data.targets)]
    rsna, threshold = best_threshold_rsna(images)
    return {**detection_metrics(images), "rsna_score": rsna, "score_threshold": threshold}


def score_split(model: LesionDetector, data: DetectionSplit, device: torch.device, threshold: float) -> dict[str, float]:
    """The scored split's row: RSNA score at the confidence `threshold` chosen on val, mAP and AP at
    IoU 0.4 / 0.5 / 0.6 (class-agnostic) and `map/<pathology>` (a box counts for its predicted class)."""
    predictions = _predictions(model, data, device)
    images = [(p["boxes"], p["scores"], t["boxes"]) for p, t in zip(predictions, data.targets)]
    labelled = [(p["boxes"], p["scores"], p["labels"], t["boxes"], t["labels"]) for p, t in zip(predictions, data.targets)]
    return {
        **detection_metrics(images),
        "rsna_score": rsna_score(kept_at(images, threshold)),
        **per_class_map(labelled, PATHOLOGIES),
    }


@dataclasses.dataclass(frozen=True)
class Fitted:
    """The checkpoint chosen on val (CPU weights), its epoch and val scores."""

    model: LesionDetector
    epoch: int
    val: dict[str, float]


def fit_detector(
    config: DetectionTrainConfig, train: DetectionSplit, val: DetectionSplit, device: torch.device, label: str = "detection"
) -> Fitted:
    """Train `config`'s detector in-process on `device` with the trainer's optimiser and schedule
    (AdamW, one-cycle), score val every epoch and keep the epoch of the best val RSNA score."""
    if config.epochs < 1 or len(train.image) < config.batch_size:
        raise ValueError(f"{config.epochs} epochs of {len(train.image)} images make no batch of {config.batch_size}")
    torch.manual_seed(derived_seed(config.seed, "train", "torch/rank", 0))
    batches = DataLoader(
        torch.arange(len(train.image)),
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(derived_seed(config.seed, "train", "batches", 0)),
    )
    model = LesionDetector(config.model).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * len(batches)
    )
    best: Fitted | None = None
    for epoch in range(1, config.epochs + 1):
        started = time.time()
        losses = train_epoch(model, optimizer, scheduler, train, batches, device, config.model)
        scores = evaluate_split(model, val, device)
        print(
            f"[{label}] epoch {epoch}/{config.epochs} loss {losses['total']:.4f} | val RSNA score {scores['rsna_score']:.4f} "
            f"(threshold {scores['score_threshold']:.2f}) mAP {scores['map']:.4f} ({time.time() - started:.0f}s)",
            flush=True,
        )
        if best is None or scores["rsna_score"] > best.val["rsna_score"]:
            best = Fitted(copy.deepcopy(model).cpu().eval(), epoch, scores)
    return best  # type: ignore[return-value]  # epochs >= 1: set in the first epoch

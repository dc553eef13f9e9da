"""`twinray eval segmentation`: per-class Dice of the anatomy segmenter on held-out phantoms (also each
epoch's checkpoint score in training), in the shared report shape (twinray.shared.evaluation.report)."""

from __future__ import annotations

import torch

from twinray.shared.data.anatomy import ANATOMY_CLASSES
from twinray.shared.data.phantoms.dataset import PhantomSegmentationDataset, read_phantom_split
from twinray.shared.evaluation.metrics import per_image_class_dice, summarise_dice
from twinray.shared.evaluation.report import Stat, evaluation_report, published_protocol, single
from twinray.shared.models.segmentation.network import segmenter_from_weights
from twinray.shared.platform.config import Settings
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import ArtifactStore, open_store

MODEL_NAME = "segmentation"


def evaluate_dice(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 16) -> dict:
    """Mean and per-class Dice of `model` on images (N,1,S,S) against label maps (N,S,S)."""
    model.eval()
    scores = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits = model(images[start : start + batch_size].to(device))
            pred = logits.argmax(dim=1).cpu()
            scores.append(per_image_class_dice(pred, labels[start : start + batch_size], len(ANATOMY_CLASSES)))
    return summarise_dice(torch.cat(scores), ANATOMY_CLASSES)


def as_tensors(dataset: PhantomSegmentationDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """A phantom split as (images (N,1,S,S), label maps (N,S,S)) tensors."""
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.stack(labels)


def dice_metrics(scores: dict) -> dict[str, Stat]:
    """`evaluate_dice`'s scores as report metrics: `mean_dice`, then `dice_<class>` (one run each)."""
    per_class = {f"dice_{name}": single(value) for name, value in scores["per_class"].items()}
    return {"mean_dice": single(scores["mean_dice"]), **per_class}


def evaluate_split(
    model: torch.nn.Module, store: ArtifactStore, dataset: str, split: str = "test", *, models: dict | None = None
) -> dict:
    """Dice of `model` on a stored phantom split, in the shared report shape (`models`: {name: version})."""
    images, labels = as_tensors(PhantomSegmentationDataset(read_phantom_split(store, dataset, split)))
    scored = {"dataset": dataset, "split": split, "images": len(images), "image_size": list(images.shape[-2:])}
    rows = {MODEL_NAME: dice_metrics(evaluate_dice(model, images, labels))}
    return evaluation_report(published_protocol(scored, models or {}), rows)


def evaluate_published(
    settings: Settings, *, version: str = "latest", dataset: str = "cxr-phantoms-v2", split: str = "test"
) -> dict:
    """Per-class Dice of a published segmenter on a held-out phantom split (`twinray eval segmentation`)."""
    registry = ModelRegistry(open_store(settings))
    loaded = registry.load(MODEL_NAME, registry.resolve(MODEL_NAME, version))
    model = segmenter_from_weights(loaded.config, loaded.weights)
    return evaluate_split(model, registry.store, dataset, split, models={MODEL_NAME: loaded.version})

"""`twinray train segmentation`: the anatomy U-Net on phantom CXRs, trained with Ray Train.

Each worker reads the phantom dataset from the artifact store, trains with Dice + cross-entropy
(bf16 autocast on GPU), reports loss and validation Dice every epoch (visible on the Ray dashboard),
and rank 0 checkpoints into the store; the driver publishes the best checkpoint to the registry.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import ray.train.torch
import torch
from monai.losses import DiceCELoss
from torch.utils.data import DataLoader

from twinray.shared.data.anatomy import ANATOMY_CLASSES
from twinray.shared.data.phantoms.dataset import PhantomSegmentationDataset, read_phantom_manifest, read_phantom_split
from twinray.shared.evaluation.segmentation import as_tensors, evaluate_dice
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig
from twinray.shared.platform.config import Settings
from twinray.shared.platform.registry import ModelVersion
from twinray.shared.platform.storage import ArtifactStore
from twinray.training import harness
from twinray.training.autocast import autocast
from twinray.training.config import TrainConfig

MODEL_NAME = "segmentation"
SCORE = "val_mean_dice"


@dataclasses.dataclass(frozen=True)
class SegmentationTrainConfig(TrainConfig):
    dataset: str = "cxr-phantoms-v2"
    epochs: int = 8
    batch_size: int = 8
    learning_rate: float = 3e-3
    seed: int = 0
    workers: int = 1
    use_gpu: bool = False
    model: SegmenterConfig = SegmenterConfig()


def train_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    worker = harness.worker_context(loop_config, SegmentationTrainConfig)
    config, device = worker.config, worker.device
    torch.manual_seed(worker.rank_seed("torch"))
    train_set = PhantomSegmentationDataset(read_phantom_split(worker.store, config.dataset, "train"))
    val_images, val_labels = as_tensors(PhantomSegmentationDataset(read_phantom_split(worker.store, config.dataset, "val")))

    loader = ray.train.torch.prepare_data_loader(
        DataLoader(train_set, batch_size=config.batch_size, shuffle=True, drop_last=True)
    )
    model = ray.train.torch.prepare_model(AnatomySegmenter(config.model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * len(loader)
    )
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    for epoch in range(config.epochs):
        if worker.world_size > 1:
            loader.sampler.set_epoch(epoch)
        model.train()
        started, total, steps = time.time(), 0.0, 0
        for images, labels in loader:
            with autocast(device):
                loss = loss_fn(model(images), labels.unsqueeze(1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total, steps = total + loss.item(), steps + 1
        metrics = {"epoch": epoch + 1, "train_loss": total / max(steps, 1), "epoch_seconds": time.time() - started}
        if worker.is_rank0:
            dice = evaluate_dice(harness.unwrap(model), val_images, val_labels)
            metrics.update({SCORE: dice["mean_dice"], **{f"val_dice_{k}": v for k, v in dice["per_class"].items()}})
            print(
                f"[segmentation] epoch {epoch + 1}/{config.epochs} loss {metrics['train_loss']:.4f} "
                f"val mean Dice {dice['mean_dice']:.4f} ({metrics['epoch_seconds']:.0f}s)",
                flush=True,
            )
        harness.save_checkpoint(harness.unwrap(model).state_dict(), epoch + 1, metrics)


def prepare(store: ArtifactStore, config: SegmentationTrainConfig) -> harness.Prepared[SegmentationTrainConfig]:
    """The network's input size is the dataset's image size (NotFound before Ray starts)."""
    size = read_phantom_manifest(store, config.dataset)["size"]
    return harness.Prepared(dataclasses.replace(config, model=dataclasses.replace(config.model, input_size=size)))


def card(run: harness.Trained[SegmentationTrainConfig]) -> str:
    config = run.config
    return (
        f"# Anatomy segmenter\n\nMONAI residual U-Net, channels {list(config.model.channels)}, "
        f"input {config.model.input_size}px, classes {', '.join(ANATOMY_CLASSES)}.\n"
        f"Trained on phantom dataset `{config.dataset}` for {config.epochs} epochs with "
        f"{config.workers} Ray Train worker(s); best validation mean Dice {run.metrics.get(SCORE, float('nan')):.4f} "
        f"at epoch {run.best_epoch}.\nPhantoms only: not validated on real radiographs.\n"
    )


SPEC = harness.TrainSpec(
    name=MODEL_NAME,
    help="anatomy U-Net",
    config_class=SegmentationTrainConfig,
    score=SCORE,
    loop=train_loop,
    prepare=prepare,
    card=card,
)


def train_segmentation(settings: Settings, config: SegmentationTrainConfig) -> ModelVersion:
    """Train on Ray and publish the best checkpoint as the next `segmentation` version."""
    return harness.train_and_publish(SPEC, settings, config)

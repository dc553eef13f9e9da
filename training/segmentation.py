"""`twinray train segmentation`: the anatomy U-Net on phantom CXRs, trained with Ray Train.

Each worker reads the phantom dataset from the artifact store, trains with Dice + cross-entropy
(bf16 autocast on GPU), reports loss and validation Dice every epoch (visible on the Ray dashboard),
and rank 0 checkpoints into the store; the driver publishes the best checkpoint to the registry.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import ray.train
import ray.train.torch
import torch
from monai.losses import DiceCELoss
from torch.utils.data import DataLoader

from twinray.shared.data.anatomy import ANATOMY_CLASSES
from twinray.shared.data.phantoms.dataset import PhantomSegmentationDataset, read_phantom_manifest, read_phantom_split
from twinray.shared.evaluation.segmentation import as_tensors, evaluate_dice
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig
from twinray.shared.platform.config import Settings
from twinray.shared.platform.ray_runtime import ensure_ray
from twinray.shared.platform.registry import ModelRegistry, ModelVersion
from twinray.shared.platform.storage import open_store
from twinray.training import harness

MODEL_NAME = "segmentation"
SCORE = "val_mean_dice"


@dataclasses.dataclass(frozen=True)
class SegmentationTrainConfig:
    dataset: str = "cxr-phantoms"
    epochs: int = 8
    batch_size: int = 8
    learning_rate: float = 3e-3
    seed: int = 0
    workers: int = 1
    use_gpu: bool = False
    model: SegmenterConfig = SegmenterConfig()


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"] + ray.train.get_context().get_world_rank())
    store = open_store(Settings.from_env(config["settings_env"]))
    train_set = PhantomSegmentationDataset(read_phantom_split(store, config["dataset"], "train"))
    val_images, val_labels = as_tensors(PhantomSegmentationDataset(read_phantom_split(store, config["dataset"], "val")))

    loader = ray.train.torch.prepare_data_loader(
        DataLoader(train_set, batch_size=config["batch_size"], shuffle=True, drop_last=True)
    )
    model_config = SegmenterConfig.from_dict(config["model"])
    model = ray.train.torch.prepare_model(AnatomySegmenter(model_config))
    device = ray.train.torch.get_device()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["learning_rate"], weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config["learning_rate"], total_steps=config["epochs"] * len(loader)
    )
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    is_rank0 = ray.train.get_context().get_world_rank() == 0

    for epoch in range(config["epochs"]):
        if ray.train.get_context().get_world_size() > 1:
            loader.sampler.set_epoch(epoch)
        model.train()
        started, total, steps = time.time(), 0.0, 0
        for images, labels in loader:
            with harness.autocast(device):
                loss = loss_fn(model(images), labels.unsqueeze(1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total, steps = total + loss.item(), steps + 1
        metrics = {"epoch": epoch + 1, "train_loss": total / max(steps, 1), "epoch_seconds": time.time() - started}
        if is_rank0:
            dice = evaluate_dice(harness.unwrap(model), val_images, val_labels)
            metrics.update({SCORE: dice["mean_dice"], **{f"val_dice_{k}": v for k, v in dice["per_class"].items()}})
            print(
                f"[segmentation] epoch {epoch + 1}/{config['epochs']} loss {metrics['train_loss']:.4f} "
                f"val mean Dice {dice['mean_dice']:.4f} ({metrics['epoch_seconds']:.0f}s)",
                flush=True,
            )
        state = {"model": harness.unwrap(model).state_dict(), "epoch": epoch + 1}
        harness.save_checkpoint(state, metrics)


def train_segmentation(settings: Settings, config: SegmentationTrainConfig) -> ModelVersion:
    """Train on Ray, publish the best checkpoint as the next `segmentation` version and return it.
    The network's input size is the dataset's image size."""
    size = read_phantom_manifest(open_store(settings), config.dataset)["size"]
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, input_size=size))
    ensure_ray(settings)
    loop_config = {**dataclasses.asdict(config), "model": config.model.to_dict()}
    result = harness.fit(
        train_loop,
        loop_config=loop_config,
        settings=settings,
        run_name=f"segmentation-{int(time.time())}",
        workers=config.workers,
        use_gpu=config.use_gpu,
        score_metric=SCORE,
    )
    state, metrics = harness.best_state(result, SCORE)
    registry = ModelRegistry(open_store(settings))
    return harness.publish(
        registry,
        MODEL_NAME,
        state_dict=state["model"],
        config=config.model.to_dict(),
        metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        training={**loop_config, "best_epoch": state["epoch"], "ray_run": result.path},
        card=(
            f"# Anatomy segmenter\n\nMONAI residual U-Net, channels {list(config.model.channels)}, "
            f"input {config.model.input_size}px, classes {', '.join(ANATOMY_CLASSES)}.\n"
            f"Trained on phantom dataset `{config.dataset}` for {config.epochs} epochs with "
            f"{config.workers} Ray Train worker(s); best validation mean Dice {metrics.get(SCORE, float('nan')):.4f} "
            f"at epoch {state['epoch']}.\nPhantoms only: not validated on real radiographs.\n"
        ),
    )

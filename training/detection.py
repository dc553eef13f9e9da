"""`twinray train detection --variant V`: the lesion detector (RetinaNet, twinray.shared.models.detection)
on phantom CXRs, trained with Ray Train.

Each worker reads the phantom split's images, boxes and pathology classes and, for the variants that
read them, the twin residuals (a stored twin-residual dataset, computed once by a published twin
model) or the anatomy maps (the published segmenter's, labelled once at the start). Rank 0 scores
every epoch on val with the RSNA challenge score at the confidence threshold that is best on val;
the driver publishes the best checkpoint. Val boxes choose the checkpoint: real data has them.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import ray.train.torch
import torch
from torch.utils.data import DataLoader

from twinray.shared.data.phantoms.dataset import PhantomArrays, read_phantom_manifest, read_phantom_split
from twinray.shared.data.twin_residuals import read_twin_residual_manifest, read_twin_residuals
from twinray.shared.evaluation.detection_metrics import best_threshold_rsna, detection_metrics
from twinray.shared.models.components.twin import batched
from twinray.shared.models.detection.network import DetectorConfig, LesionDetector, detect, detector_inputs
from twinray.shared.models.normal_synthesis.network import resize_labels, segment_anatomy
from twinray.shared.models.segmentation.network import segmenter_from_weights
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.imaging import unit_images
from twinray.shared.platform.registry import ModelRegistry, ModelVersion
from twinray.shared.platform.storage import ArtifactStore
from twinray.training import harness
from twinray.training.config import TrainConfig

MODEL_NAME = "detection"
SEGMENTER_NAME = "segmentation"
SCORE = "val_rsna_score"
NEEDS_RESIDUALS = ("concat", "attention")


@dataclasses.dataclass(frozen=True)
class DetectionTrainConfig(TrainConfig):
    dataset: str = "cxr-phantoms-v2"
    residuals: str = ""  # the twin-residual dataset the concat and attention variants read
    segmentation_version: int | str = "latest"  # the anatomy variant's segmenter, resolved before Ray starts
    epochs: int = 12
    batch_size: int = 8
    learning_rate: float = 1e-3
    seed: int = 0
    workers: int = 1
    use_gpu: bool = False
    model: DetectorConfig = DetectorConfig()


@dataclasses.dataclass(frozen=True)
class DetectionSplit:
    """One split as the detector reads it: images (N,1,S,S), residuals (N,1,S,S) or anatomy (N,S,S)
    when the variant reads them, and one target dict per image (boxes xyxy px, labels = PATHOLOGIES index)."""

    image: torch.Tensor
    residual: torch.Tensor | None
    anatomy: torch.Tensor | None
    targets: list[dict[str, torch.Tensor]]

    def inputs(self, config: DetectorConfig, rows: torch.Tensor) -> torch.Tensor:
        residual = None if self.residual is None else self.residual[rows]
        anatomy = None if self.anatomy is None else self.anatomy[rows]
        return detector_inputs(config, self.image[rows], residual, anatomy)


def targets_of(arrays: PhantomArrays) -> list[dict[str, torch.Tensor]]:
    """Each image's true boxes and pathology labels, as torchvision's detectors take them."""
    return [
        {
            "boxes": torch.from_numpy(arrays.boxes_of(i).copy()).float(),
            "labels": torch.from_numpy(arrays.lesion_classes[i, : arrays.box_count[i]].astype("int64")),
        }
        for i in range(len(arrays))
    ]


def detection_split(
    store: ArtifactStore, config: DetectionTrainConfig, split: str, segmenter: torch.nn.Module | None
) -> DetectionSplit:
    """`split` of the config's dataset with what its variant reads."""
    arrays = read_phantom_split(store, config.dataset, split)
    image = unit_images(arrays.image)
    residual = anatomy = None
    if config.model.variant in NEEDS_RESIDUALS:
        residual = torch.from_numpy(read_twin_residuals(store, config.residuals, split))[:, None]
    if config.model.variant == "anatomy":
        labels = batched(lambda x: segment_anatomy(segmenter, x)[:, None].float(), image, torch.device("cpu"))[:, 0]
        anatomy = resize_labels(labels.long(), image.shape[-1]).to(torch.uint8)
    return DetectionSplit(image, residual, anatomy, targets_of(arrays))


def _segmenter(store: ArtifactStore, config: DetectionTrainConfig) -> torch.nn.Module | None:
    if config.model.variant != "anatomy":
        return None
    loaded = ModelRegistry(store).load(SEGMENTER_NAME, config.segmentation_version)
    return segmenter_from_weights(loaded.config, loaded.weights).eval()


def evaluate_split(model: LesionDetector, data: DetectionSplit, device: torch.device) -> dict[str, float]:
    """RSNA score at the confidence threshold best on these images (and that threshold), mAP and AP
    at IoU 0.4 / 0.5 / 0.6 over every prediction, class-agnostic as the RSNA challenge is."""
    rows = torch.arange(len(data.image))
    predictions = detect(model, data.inputs(model.config, rows), device)
    images = [(p["boxes"], p["scores"], t["boxes"]) for p, t in zip(predictions, data.targets)]
    rsna, threshold = best_threshold_rsna(images)
    return {**detection_metrics(images), "rsna_score": rsna, "score_threshold": threshold}


def train_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    worker = harness.worker_context(loop_config, DetectionTrainConfig)
    config, device = worker.config, worker.device
    torch.manual_seed(worker.rank_seed("torch"))
    segmenter = _segmenter(worker.store, config)
    train = detection_split(worker.store, config, "train", segmenter)
    val = detection_split(worker.store, config, "val", segmenter) if worker.is_rank0 else None

    loader = ray.train.torch.prepare_data_loader(
        DataLoader(torch.arange(len(train.image)), batch_size=config.batch_size, shuffle=True, drop_last=True),
        move_to_device=False,
    )
    model = ray.train.torch.prepare_model(LesionDetector(config.model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * len(loader)
    )

    for epoch in range(config.epochs):
        if worker.world_size > 1:
            loader.sampler.set_epoch(epoch)
        model.train()
        started, sums, steps = time.time(), {}, 0
        for rows in loader:
            inputs = train.inputs(config.model, rows).to(device)
            targets = [{k: v.to(device) for k, v in train.targets[i].items()} for i in rows.tolist()]
            with harness.autocast(device):
                losses = model(list(inputs), targets)
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # focal-loss spikes early on, from scratch
            optimizer.step()
            scheduler.step()
            for name, value in {**losses, "total": loss}.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            steps += 1
        metrics = {"epoch": epoch + 1, **{f"train_{k}_loss": v / max(steps, 1) for k, v in sums.items()}}
        metrics["epoch_seconds"] = time.time() - started
        if worker.is_rank0:
            scores = evaluate_split(harness.unwrap(model).eval(), val, device)
            metrics.update({f"val_{k}": v for k, v in scores.items()})
            print(
                f"[detection/{config.model.variant}] epoch {epoch + 1}/{config.epochs} loss {metrics['train_total_loss']:.4f} "
                f"| val RSNA score {scores['rsna_score']:.4f} (threshold {scores['score_threshold']:.2f}) mAP {scores['map']:.4f} "
                f"AP50 {scores['ap50']:.4f} ({metrics['epoch_seconds']:.0f}s)",
                flush=True,
            )
        harness.save_checkpoint(harness.unwrap(model).state_dict(), epoch + 1, metrics)


def prepare(store: ArtifactStore, config: DetectionTrainConfig) -> harness.Prepared[DetectionTrainConfig]:
    """The input size is the dataset's; the residuals must come from that dataset and the segmenter is
    resolved once (both recorded with the model), before Ray starts."""
    size = read_phantom_manifest(store, config.dataset)["size"]
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, input_size=size))
    training: dict[str, Any] = {}
    if config.model.variant in NEEDS_RESIDUALS:
        if not config.residuals:
            raise InvalidInput(f"the {config.model.variant} detector reads twin residuals: pass --residuals NAME")
        manifest = read_twin_residual_manifest(store, config.residuals)
        if manifest["source"]["dataset"] != config.dataset:
            raise InvalidInput(
                f"residuals {config.residuals!r} were computed on {manifest['source']['dataset']!r}, not {config.dataset!r}"
            )
        training["twin_residuals"] = {"name": config.residuals, "model": manifest["model"]}
    if config.model.variant == "anatomy":
        version = ModelRegistry(store).resolve(SEGMENTER_NAME, config.segmentation_version)
        config = dataclasses.replace(config, segmentation_version=version)
        training["segmentation"] = {"name": SEGMENTER_NAME, "version": version}
    return harness.Prepared(config, training=training)


def card(run: harness.Trained[DetectionTrainConfig]) -> str:
    config, metrics = run.config, run.metrics
    reads = {
        "baseline": "the image only",
        "anatomy": f"the image and `{SEGMENTER_NAME}` v{config.segmentation_version} anatomy maps",
        "concat": f"the image and the twin residual `{config.residuals}` as a second channel",
        "attention": f"the image, its pyramid levels gated by the twin residual `{config.residuals}`",
    }[config.model.variant]
    return (
        f"# Lesion detector ({config.model.variant})\n\nRetinaNet, {config.model.backbone} FPN P3-P7 from scratch, "
        f"input {config.model.input_size}px, reading {reads}.\nTrained on `{config.dataset}` for {config.epochs} epochs "
        f"with {config.workers} Ray Train worker(s); best epoch {run.best_epoch} by {SCORE} on val: "
        f"{metrics.get(SCORE, float('nan')):.4f} at confidence >= {metrics.get('val_score_threshold', float('nan')):.2f} "
        f"(mAP {metrics.get('val_map', float('nan')):.4f}, AP50 {metrics.get('val_ap50', float('nan')):.4f}).\n"
        "Phantoms only: not validated on real radiographs.\n"
    )


def detection_config(variant: str = "baseline", **fields: Any) -> DetectionTrainConfig:
    """The training config of `fields`, its detector of `variant`."""
    model = fields.pop("model", DetectorConfig())
    return DetectionTrainConfig(**fields, model=dataclasses.replace(model, variant=variant))


SPEC = harness.TrainSpec(
    name=MODEL_NAME,
    help="lesion detector (RetinaNet; --variant baseline, anatomy, concat or attention)",
    config_class=DetectionTrainConfig,
    score=SCORE,
    loop=train_loop,
    prepare=prepare,
    card=card,
    configure=detection_config,
    flags=(
        harness.Flag("--variant", "baseline", "baseline, anatomy, concat (residual channel) or attention (residual gating)"),
        harness.Flag("--residuals", "", "twin-residual dataset (concat, attention)"),
        harness.Flag("--segmentation-version", "latest", "segmenter of the anatomy variant"),
    ),
)


def train_detection(settings: Settings, config: DetectionTrainConfig) -> ModelVersion:
    """Train on Ray and publish the best checkpoint as the next `detection` version."""
    return harness.train_and_publish(SPEC, settings, config)

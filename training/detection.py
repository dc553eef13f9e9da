"""`twinray train detection --variant V`: the lesion detector (RetinaNet, twinray.shared.models.detection)
on phantom CXRs, trained with Ray Train.

Each worker reads the phantom split's images, boxes and pathology classes and, for the variants that
read them, the twin residuals (a stored twin-residual dataset, computed once by a published twin
model) or the anatomy maps (the published segmenter's, labelled once at the start). The training
split may also hold synthetic abnormal images (a stored dataset made from the same training split by
the same twin: twinray.shared.synthesis.synthetic_abnormal); val and test never do. Rank 0 scores
every epoch on val with the RSNA challenge score at the confidence threshold that is best on val;
the driver publishes the best checkpoint. Val boxes choose the checkpoint: real data has them.

`--dataset rsna --root DIR` trains on the real RSNA Pneumonia Detection download instead (baseline
and anatomy only: the twins behind residuals and synthetic images are trained on phantoms).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import ray.train.torch
import torch
from torch.utils.data import DataLoader

from twinray.shared.data.phantoms.dataset import read_phantom_manifest
from twinray.shared.data.rsna import IMAGES_DIR, LABELS_FILE, SPLITS, rsna_split
from twinray.shared.data.synthetic_abnormal import read_synthetic_abnormal_manifest
from twinray.shared.data.twin_residuals import read_twin_residual_manifest
from twinray.shared.models.detection.network import LesionDetector
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.registry import ModelRegistry, ModelVersion
from twinray.shared.platform.storage import ArtifactStore, sha256_bytes
from twinray.training import harness
from twinray.training.detection_data import (
    NEEDS_RESIDUALS,
    RSNA,
    SEGMENTER_NAME,
    DetectionTrainConfig,
    detection_config,
    detection_split,
    load_segmenter,
)
from twinray.training.detection_fit import evaluate_split, train_epoch

MODEL_NAME = "detection"
SCORE = "val_rsna_score"
# RSNA boxes are 21-180 px at 256 (1st-99th percentile of the 9,555 boxes), inside the anchors' 8-203 px;
# at 512 the tallest reach 470 px, beyond them, and the images cost 4x the memory and compute.
RSNA_INPUT_SIZE = 256


def train_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    worker = harness.worker_context(loop_config, DetectionTrainConfig)
    config, device = worker.config, worker.device
    torch.manual_seed(worker.rank_seed("torch"))
    segmenter = load_segmenter(worker.store, config)
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
        started = time.time()
        losses = train_epoch(model, optimizer, scheduler, train, loader, device, config.model)
        metrics = {"epoch": epoch + 1, **{f"train_{k}_loss": v for k, v in losses.items()}}
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


def _synthetic(store: ArtifactStore, config: DetectionTrainConfig, twin_model: dict | None) -> dict:
    """The synthetic abnormal dataset's training.json entry, once it is known to fit the run."""
    if config.synthetic_count < 0 or bool(config.synthetic) != bool(config.synthetic_count):
        raise InvalidInput(
            f"pass --synthetic NAME with --synthetic-count N > 0, or neither (got {config.synthetic!r}, {config.synthetic_count})"
        )
    manifest = read_synthetic_abnormal_manifest(store, config.synthetic)
    made = f"synthetic dataset {config.synthetic!r} was made"
    if manifest["source"]["dataset"] != config.dataset:
        raise InvalidInput(
            f"{made} from {manifest['source']['dataset']!r}, not {config.dataset!r}: write one with `twinray data synthetic`"
        )
    if twin_model is not None and manifest["model"] != twin_model:
        made_by, residuals_by = (f"{m['name']} v{m['version']}" for m in (manifest["model"], twin_model))
        raise InvalidInput(f"{made} by {made_by}, the residuals {config.residuals!r} by {residuals_by}: use the same twin model")
    if manifest["count"] < config.synthetic_count:
        raise InvalidInput(f"{made} with {manifest['count']} images, --synthetic-count asks {config.synthetic_count}")
    keys = ("model", "segmenter", "seed", "method")
    return {"name": config.synthetic, "count": config.synthetic_count, **{key: manifest[key] for key in keys}}


def _rsna(config: DetectionTrainConfig) -> tuple[DetectionTrainConfig, dict[str, Any]]:
    """The RSNA run's config (input size RSNA_INPUT_SIZE, root made absolute: Ray workers do not run in
    the driver's working directory) and its training.json entry, once the folder holds the Kaggle layout.
    The absolute root is recorded (the workers read it, and the store is the team's); the labels' sha256
    names the annotations wherever the folder lives."""
    variant = config.model.variant
    if variant in NEEDS_RESIDUALS:
        raise InvalidInput(
            f"--dataset rsna trains baseline or anatomy, not {variant}: its twin residuals come from twins trained on phantoms"
        )
    if config.synthetic or config.synthetic_count:
        raise InvalidInput("--dataset rsna takes no --synthetic: synthetic abnormal images are made from phantoms by their twin")
    layout = f"the Kaggle download folder holding {LABELS_FILE} and {IMAGES_DIR}/"
    if not config.root:
        raise InvalidInput(f"--dataset rsna reads the real images: pass --root DIR, {layout}")
    root = Path(config.root).expanduser().resolve()
    if not (root / LABELS_FILE).is_file() or not (root / IMAGES_DIR).is_dir():
        raise InvalidInput(f"--root {root} lacks {LABELS_FILE} or {IMAGES_DIR}/: pass {layout}")
    splits = {split: rsna_split(root, split) for split in SPLITS}
    if len(splits["train"]) < config.batch_size:
        raise InvalidInput(
            f"the RSNA train split of {root} has {len(splits['train'])} images, fewer than --batch-size {config.batch_size}"
        )
    model = dataclasses.replace(config.model, input_size=RSNA_INPUT_SIZE)
    entry = {
        "labels_sha256": sha256_bytes((root / LABELS_FILE).read_bytes()),
        "images": {split: len(dataset) for split, dataset in splits.items()},
        "labelled_without_dicom": sum(len(dataset.missing_images) for dataset in splits.values()),
    }
    return dataclasses.replace(config, root=str(root), model=model), {"rsna": entry}


def prepare(store: ArtifactStore, config: DetectionTrainConfig) -> harness.Prepared[DetectionTrainConfig]:
    """The input size is the dataset's; the residuals and synthetic images must come from that dataset
    (and the same twin model), and the segmenter is resolved once (all recorded with the model), before Ray starts.
    An RSNA run checks its folder instead (`_rsna`)."""
    if config.dataset == RSNA:
        config, training = _rsna(config)
    elif config.root:
        raise InvalidInput(f"--root is read with --dataset rsna only; {config.dataset!r} comes from the artifact store")
    else:
        config, training = _phantom_inputs(store, config)
    if config.model.variant == "anatomy":
        version = ModelRegistry(store).resolve(SEGMENTER_NAME, config.segmentation_version)
        config = dataclasses.replace(config, segmentation_version=version)
        training["segmentation"] = {"name": SEGMENTER_NAME, "version": version}
    return harness.Prepared(config, training=training)


def _phantom_inputs(store: ArtifactStore, config: DetectionTrainConfig) -> tuple[DetectionTrainConfig, dict[str, Any]]:
    """A phantom run's config at its dataset's size, and the training.json entries of its residuals and synthetic images."""
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
    if config.synthetic or config.synthetic_count:
        training["synthetic_abnormal"] = _synthetic(store, config, training.get("twin_residuals", {}).get("model"))
    return config, training


def card(run: harness.Trained[DetectionTrainConfig]) -> str:
    config, metrics = run.config, run.metrics
    reads = {
        "baseline": "the image only",
        "anatomy": f"the image and `{SEGMENTER_NAME}` v{config.segmentation_version} anatomy maps",
        "concat": f"the image and the twin residual `{config.residuals}` as a second channel",
        "attention": f"the image, its pyramid levels gated by the twin residual `{config.residuals}`",
    }[config.model.variant]
    synthetic = (
        f", plus the first {config.synthetic_count} synthetic abnormal images of `{config.synthetic}`"
        if config.synthetic_count
        else ""
    )
    data, caveat = f"`{config.dataset}`{synthetic}", "Phantoms only: not validated on real radiographs.\n"
    if config.dataset == RSNA:
        images = run.prepared.training["rsna"]["images"]
        data = f"the RSNA Pneumonia Detection stage-2 train images ({images['train']} train, {images['val']} val; every box an opacity)"
        caveat = "Real radiographs; its test split is not scored here." + (
            " Its anatomy maps come from a segmenter trained on phantoms.\n" if config.model.variant == "anatomy" else "\n"
        )
    return (
        f"# Lesion detector ({config.model.variant})\n\nRetinaNet, {config.model.backbone} FPN P3-P7 from scratch, "
        f"input {config.model.input_size}px, reading {reads}.\nTrained on {data} for {config.epochs} epochs "
        f"with {config.workers} Ray Train worker(s); best epoch {run.best_epoch} by {SCORE} on val: "
        f"{metrics.get(SCORE, float('nan')):.4f} at confidence >= {metrics.get('val_score_threshold', float('nan')):.2f} "
        f"(mAP {metrics.get('val_map', float('nan')):.4f}, AP50 {metrics.get('val_ap50', float('nan')):.4f}).\n{caveat}"
    )


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
        harness.Flag("--root", "", "with --dataset rsna: the Kaggle RSNA Pneumonia Detection folder (baseline, anatomy)"),
        harness.Flag("--residuals", "", "twin-residual dataset (concat, attention)"),
        harness.Flag("--segmentation-version", "latest", "segmenter of the anatomy variant"),
        harness.Flag("--synthetic", "", "synthetic abnormal dataset (twinray data synthetic) added to the training split"),
        harness.Flag("--synthetic-count", 0, "how many of its first images join the training split"),
    ),
)


def train_detection(settings: Settings, config: DetectionTrainConfig) -> ModelVersion:
    """Train on Ray and publish the best checkpoint as the next `detection` version."""
    return harness.train_and_publish(SPEC, settings, config)

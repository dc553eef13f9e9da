"""`twinray eval detection --seeds N`: does the healthy twin help a detector? The residual-saliency
ablation on the phantoms, every learned row trained with one budget and the same seeds, chosen on
val, scored on the test split once.

Rows: `nothing` (no box: the do-nothing row), `residual_boxes` (boxes where the twin residual is
large, no learning), `baseline` (RetinaNet on the image: the standard method), `anatomy` (+ the
segmenter's anatomy map: does the twin add more than knowing the organs?), `concat_cyclegan`
(+ the CycleGAN translator's residual as a channel), `concat` (+ the anatomy-prior twin's residual),
`attention` (that residual gating the pyramid), `attention_synthetic` (+ synthetic abnormal images,
their count chosen on val per seed).

The twin models and the segmenter are tools of every row, not rows: the latest published versions
trained on the dataset are used (train them first: `twinray train segmentation`, `matching-pairs`,
`normal-synthesis`), their residuals stored once. Detectors are fitted in-process on one device
(twinray.training.detection_fit), so the ablation runs on a GPU machine without Ray; they are
scored, not published.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from twinray.shared.data.phantoms.dataset import read_phantom_manifest
from twinray.shared.data.phantoms.pathologies import PATHOLOGIES
from twinray.shared.evaluation.detection_figures import DetectionCase, attention_figure, detection_figure
from twinray.shared.evaluation.detection_metrics import detection_metrics, kept_at, rsna_score
from twinray.shared.evaluation.report import evaluation_report, over_runs
from twinray.shared.evaluation.residual_boxes import choose_on_val, residual_boxes
from twinray.shared.models.detection.network import DetectorConfig, detect
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import FailedPrecondition, InvalidInput
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import ArtifactStore, open_store
from twinray.shared.synthesis.synthetic_abnormal import write_synthetic_abnormal
from twinray.shared.synthesis.twin_residuals import GENERATOR, SEGMENTER, TRANSLATOR, write_twin_residuals
from twinray.training.detection_data import (
    DetectionSplit,
    DetectionTrainConfig,
    detection_config,
    detection_split,
    load_segmenter,
)
from twinray.training.detection_fit import Fitted, fit_detector, score_split


@dataclasses.dataclass(frozen=True)
class Row:
    """A learned row: the detector variant, whose residual it reads, whether synthetic images join."""

    variant: str
    residuals: str = ""  # GENERATOR or TRANSLATOR
    synthetic: bool = False


LEARNED_ROWS = {
    "baseline": Row("baseline"),
    "anatomy": Row("anatomy"),
    "concat_cyclegan": Row("concat", TRANSLATOR),
    "concat": Row("concat", GENERATOR),
    "attention": Row("attention", GENERATOR),
    "attention_synthetic": Row("attention", GENERATOR, synthetic=True),
}
ROWS = ("nothing", "residual_boxes", *LEARNED_ROWS)
METRICS = ("rsna_score", "map", "ap40", "ap50", "ap60", *(f"map/{name}" for name in PATHOLOGIES))


@dataclasses.dataclass(frozen=True)
class DetectionBudget:
    """What every learned row gets, per seed."""

    epochs: int = 12
    batch_size: int = 8
    learning_rate: float = 1e-3
    # synthetic images added to the training split, per real training image; chosen on val
    synthetic_shares: tuple[float, ...] = (0.5, 1.0)


@dataclasses.dataclass(frozen=True)
class Tools:
    """What every row shares: the tools' versions, the residual datasets and the synthetic set."""

    versions: dict[str, int]
    residuals: dict[str, str]
    synthetic: str
    train_images: int


def _tools(store: ArtifactStore, dataset: str, tools_dataset: str, budget: DetectionBudget) -> Tools:
    """The latest tools trained on `tools_dataset`, their residuals of `dataset` and synthetic images
    made from it (stored once, reused)."""
    _same_phantoms(store, dataset, tools_dataset)
    registry = ModelRegistry(store)
    versions = {}
    for name in (SEGMENTER, TRANSLATOR, GENERATOR):
        version = registry.latest_trained_on(name, tools_dataset)
        if version is None:
            raise FailedPrecondition(f"no {name} trained on {tools_dataset!r} is published: run `twinray train {name}` first")
        versions[name] = version
    residuals = {
        model: write_twin_residuals(store, model=model, model_version=versions[model], dataset=dataset)["name"]
        for model in (GENERATOR, TRANSLATOR)
    }
    train_images = read_phantom_manifest(store, dataset)["splits"]["train"]["count"]
    count = round(max(budget.synthetic_shares) * train_images)
    synthetic = write_synthetic_abnormal(store, dataset=dataset, count=count, model_version=versions[GENERATOR])["name"]
    return Tools(versions, residuals, synthetic, train_images)


def _same_phantoms(store: ArtifactStore, dataset: str, tools_dataset: str) -> None:
    """Tools trained on other phantoms than the detectors' must have seen the same kind of image: the
    same generator, size and seed (then the smaller set's splits are the first images of the larger's)."""
    if tools_dataset == dataset:
        return
    ours, theirs = read_phantom_manifest(store, dataset), read_phantom_manifest(store, tools_dataset)
    for key in ("generator_version", "size", "seed"):
        if ours.get(key) != theirs.get(key):
            raise InvalidInput(
                f"the tools' dataset {tools_dataset!r} has {key} {theirs.get(key)!r} but {dataset!r} has {ours.get(key)!r}: "
                "make both with the same `twinray data phantoms --generator --size --seed`"
            )


@dataclasses.dataclass(frozen=True)
class Ablation:
    """What every fit shares; picklable, so fits can run in worker processes."""

    settings_env: dict[str, str]
    dataset: str
    tools_dataset: str
    split: str
    tools: Tools
    budget: DetectionBudget
    model: DetectorConfig
    device: str


_SPLITS: dict[tuple, dict[str, DetectionSplit]] = {}  # this process's splits, as each kind of row reads them


def _splits(ablation: Ablation, config: DetectionTrainConfig) -> dict[str, DetectionSplit]:
    """train, val and the scored split as `config` reads them, read (and anatomy labelled) once per process."""
    key = (ablation.dataset, config.model.variant == "anatomy", config.residuals, config.synthetic_count)
    if key not in _SPLITS:
        store = open_store(Settings.from_env(ablation.settings_env))
        segmenter = load_segmenter(store, config)
        _SPLITS[key] = {name: detection_split(store, config, name, segmenter) for name in ("train", "val", ablation.split)}
    return _SPLITS[key]


def _fit_row(ablation: Ablation, seed: int, name: str, figure: Path | None = None) -> tuple[dict[str, float], dict | None]:
    """Fit row `name` at `seed` (for attention_synthetic, once per synthetic count, keeping the best on
    val) and score it on the scored split at its val threshold; what val chose for attention_synthetic."""
    row, device = LEARNED_ROWS[name], torch.device(ablation.device)
    counts = [round(share * ablation.tools.train_images) for share in ablation.budget.synthetic_shares] if row.synthetic else [0]
    candidates = []
    for count in counts:
        config = _config(row, ablation, seed, count)
        data = _splits(ablation, config)
        candidates.append((fit_detector(config, data["train"], data["val"], device, f"{name} seed {seed} +{count}"), config))
    fitted, config = max(candidates, key=lambda candidate: candidate[0].val["rsna_score"])
    scored = _splits(ablation, config)[ablation.split]
    scores = score_split(fitted.model, scored, device, fitted.val["score_threshold"])
    print(f"[eval detection] {name} seed {seed}: {ablation.split} RSNA score {scores['rsna_score']:.4f}", flush=True)
    if figure is not None:
        ablation_figure(fitted, scored, device, figure)
    chosen = {"seed": seed, "synthetic_count": config.synthetic_count, "val_rsna_score": fitted.val["rsna_score"]}
    return scores, chosen if row.synthetic else None


def _worker(threads: int) -> None:
    torch.set_num_threads(threads)


def run_detection_benchmark(
    settings: Settings,
    *,
    dataset: str,
    seeds: Sequence[int],
    budget: DetectionBudget = DetectionBudget(),
    model: DetectorConfig = DetectorConfig(),
    device: str = "cpu",
    split: str = "test",
    figure: Path | None = None,
    jobs: int = 1,
    tools_dataset: str = "",
) -> dict:
    """Fit every learned row once per seed on `dataset`/train, choose on val, score every row on
    `dataset`/`split` once; the shared report shape, mean and sd over the seeds. `jobs` > 1 fits that
    many detectors at once in worker processes (on one GPU they share it). `figure`: test cases of
    the last seed's attention_synthetic detector, with its attention maps. `tools_dataset`: where the
    segmenter and twin models were trained, when not on `dataset` (e.g. its first 320 of thousands
    of training phantoms, made with the same generator and seed)."""
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise InvalidInput(f"the detection ablation needs distinct seeds >= 0, got {list(seeds)}")
    if split in ("train", "val"):
        raise InvalidInput(f"the detection ablation trains on train and chooses on val: score another split than {split!r}")
    if budget.epochs < 1 or not budget.synthetic_shares or min(budget.synthetic_shares) <= 0 or jobs < 1:
        raise InvalidInput(f"the ablation needs epochs >= 1, positive synthetic shares and jobs >= 1, got {budget}, jobs {jobs}")
    store = open_store(settings)
    model = dataclasses.replace(model, input_size=read_phantom_manifest(store, dataset)["size"])
    tools_dataset = tools_dataset or dataset
    tools = _tools(store, dataset, tools_dataset, budget)
    ablation = Ablation(settings.as_env(), dataset, tools_dataset, split, tools, budget, model, device)
    _SPLITS.clear()
    generator = _splits(ablation, _config(LEARNED_ROWS["attention"], ablation, 0))
    heuristic = choose_on_val(generator["val"].residual[:, 0].float().numpy(), [t["boxes"] for t in generator["val"].targets])
    empty = [(torch.zeros(0, 4), torch.zeros(0), t["boxes"]) for t in generator[split].targets]
    runs: dict[str, list[dict[str, float]]] = {
        "nothing": [{"rsna_score": rsna_score(empty)}],
        "residual_boxes": [_heuristic_scores(generator[split], heuristic)],
    }
    fits = [(seed, name) for seed in seeds for name in LEARNED_ROWS]
    figures = [figure if (seed, name) == fits[-1] else None for seed, name in fits]
    arguments = ([ablation] * len(fits), [seed for seed, _ in fits], [name for _, name in fits], figures)
    if jobs == 1:
        results = list(map(_fit_row, *arguments))
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker, initargs=(threads,)) as pool:
            results = list(pool.map(_fit_row, *arguments))
    for (_, name), (scores, _) in zip(fits, results):
        runs.setdefault(name, []).append(scores)
    _SPLITS.clear()
    rows = {row: {metric: over_runs([run[metric] for run in runs[row]]) for metric in runs[row][0]} for row in ROWS}
    chosen = {"residual_boxes": heuristic, "attention_synthetic": [c for _, c in results if c is not None]}
    return evaluation_report(_protocol(ablation, seeds, generator, chosen), rows)


def _config(row: Row, ablation: Ablation, seed: int, synthetic_count: int = 0) -> DetectionTrainConfig:
    tools, budget = ablation.tools, ablation.budget
    return detection_config(
        row.variant,
        dataset=ablation.dataset,
        residuals=tools.residuals.get(row.residuals, ""),
        synthetic=tools.synthetic if synthetic_count else "",
        synthetic_count=synthetic_count,
        segmentation_version=tools.versions[SEGMENTER],
        epochs=budget.epochs,
        batch_size=budget.batch_size,
        learning_rate=budget.learning_rate,
        seed=seed,
        model=ablation.model,
    )


def _heuristic_scores(data: DetectionSplit, chosen: dict[str, float]) -> dict[str, float]:
    """The residual_boxes row on the scored split, at the settings chosen on val."""
    found = residual_boxes(data.residual[:, 0].float().numpy(), chosen["threshold"], int(chosen["min_pixels"]))
    images = [(boxes, scores, t["boxes"]) for (boxes, scores), t in zip(found, data.targets)]
    return {**detection_metrics(images), "rsna_score": rsna_score(kept_at(images, chosen["score_threshold"]))}


def _protocol(ablation: Ablation, seeds: Sequence[int], data: dict[str, DetectionSplit], chosen: dict) -> dict:
    dataset, split, budget, tools = ablation.dataset, ablation.split, ablation.budget, ablation.tools
    counts = {name: len(part.targets) for name, part in data.items()}
    return {
        "splits": {
            "train": f"{dataset}/train ({counts['train']} images; attention_synthetic adds synthetic abnormal images made from its normal ones)",
            "selection": (
                f"{dataset}/val ({counts['val']} images): each detector's epoch and confidence threshold, attention_synthetic's "
                "synthetic count, residual_boxes' threshold and region size, all by the RSNA score"
            ),
            "scored": {"dataset": dataset, "split": split, "images": counts[split]},
        },
        "seeds": list(seeds),
        "budget": {**dataclasses.asdict(budget), "detector": ablation.model.to_dict(), "device": ablation.device},
        "selection": "val RSNA score (real data has boxes on val); the scored split once per seed; nothing and residual_boxes learn nothing: one run (n = 1)",
        "models": dict(tools.versions),
        "models_trained_on": ablation.tools_dataset,
        "residuals": tools.residuals,
        "synthetic": tools.synthetic,
        "chosen": chosen,
    }


def ablation_figure(fitted: Fitted, data: DetectionSplit, device: torch.device, path: Path) -> list[Path]:
    """The first scored image of each pathology with its true boxes, the boxes kept at the confidence
    threshold chosen on val and its residual; and, for the attention variant, its gates (`<path>-attention.png`)."""
    first = {int(t["labels"][0]): i for i, t in reversed(list(enumerate(data.targets))) if len(t["labels"])}
    rows = torch.tensor([first[c] for c in sorted(first)])
    inputs = data.inputs(fitted.model.config, rows)
    threshold = fitted.val["score_threshold"]
    cases = [
        DetectionCase(
            image=data.image[i, 0].numpy(),
            true_boxes=data.targets[i]["boxes"].numpy(),
            true_classes=data.targets[i]["labels"].numpy(),
            pred_boxes=found["boxes"][found["scores"] >= threshold].numpy(),
            pred_scores=found["scores"][found["scores"] >= threshold].numpy(),
            pred_classes=found["labels"][found["scores"] >= threshold].numpy(),
            residual=None if data.residual is None else data.residual[i, 0].float().numpy(),
            title=f"scored image {i}: {PATHOLOGIES[int(data.targets[i]['labels'][0])]}",
        )
        for i, found in zip(rows.tolist(), detect(fitted.model.to(device), inputs, device))
    ]
    written = [detection_figure(cases, path)]
    if fitted.model.config.variant == "attention":
        written.append(attention_figure(fitted.model, inputs.to(device), path.with_name(f"{path.stem}-attention.png")))
    return written

"""`twinray eval normal-synthesis --seeds N`: train every learned row of the healthy-twin benchmark
(twinray.shared.evaluation.twin_benchmark) once per seed on Ray Train, with one budget for all, then
score them on the test split once.

Per seed: the matching-pairs translator, its pseudo-pairs, the anatomy-conditioned generator and the
ablation without the anatomy map (same budget and pairs, no anatomy map and no anatomy loss). The segmenter is
trained once (seed 0): it is a tool of every row, not a row. Every checkpoint is chosen on label-free
signals (twinray.training.matching_pairs / normal_synthesis: SCORE), never on lesion masks or true twins.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from twinray.shared.data.dataset_io import manifest_key
from twinray.shared.data.phantoms.dataset import read_phantom_manifest, read_phantom_split
from twinray.shared.evaluation.normal_synthesis import trained_twins
from twinray.shared.evaluation.report import evaluation_report
from twinray.shared.evaluation.twin_benchmark import HIGHPASS_SELECTION, HeldOut, benchmark_rows, no_learning_rows, twin_rows
from twinray.shared.models.normal_synthesis.network import SpadeConfig
from twinray.shared.models.segmentation.network import segmenter_from_weights
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import open_store
from twinray.shared.synthesis.pseudo_pairs import write_pseudo_pairs
from twinray.training import matching_pairs, normal_synthesis, segmentation


@dataclasses.dataclass(frozen=True)
class TwinBudget:
    """What every seed of every learned row gets."""

    segmentation_epochs: int = 8
    translator_epochs: int = 8
    generator_epochs: int = 8


BUCKET_SUFFIX = "-twin-benchmark"
GENERATOR = SpadeConfig()  # the product's: a residual of either sign
# Chosen on val over one seed (docs/decisions/0109-generic-lesion-pairs.md).
GENERATOR_PAIRS = "both"


def benchmark_settings(settings: Settings, dataset: str) -> Settings:
    """Settings whose store is a bucket of its own holding a copy of `dataset`: every version the
    benchmark trains is published there, so the "latest" versions that the services and a plain
    `twinray eval` use never move (to an ablation, say)."""
    bench = dataclasses.replace(settings, store_bucket=settings.store_bucket + BUCKET_SUFFIX)
    source, target = open_store(settings), open_store(bench)
    manifest = read_phantom_manifest(source, dataset)  # NotFound / InvalidInput before anything is copied
    if not target.exists(manifest_key(dataset)):
        for entry in manifest["splits"].values():
            for shard in entry["shards"]:
                target.put_bytes(shard["key"], source.get_bytes(shard["key"], sha256=shard["sha256"]))
        target.put_bytes(manifest_key(dataset), source.get_bytes(manifest_key(dataset)))  # the manifest last
    return bench


def _train_seed(settings: Settings, dataset: str, seed: int, segmentation_version: int, budget: TwinBudget) -> dict[str, int]:
    """Train one seed's translator, pseudo-pairs, generator and ablation; their published versions."""
    translator = matching_pairs.train_matching_pairs(
        settings, matching_pairs.MatchingPairsTrainConfig(dataset=dataset, epochs=budget.translator_epochs, seed=seed)
    )
    pairs = write_pseudo_pairs(
        settings, model_version=translator.version, dataset=dataset, name=f"{dataset}-pseudo-pairs-seed{seed}"
    )
    versions = {"matching-pairs": translator.version}
    for row, use_anatomy in (("anatomy_prior", True), ("no_anatomy", False)):
        config = normal_synthesis.normal_synthesis_config(
            pseudo_pairs=pairs["name"],
            dataset=dataset,
            seed=seed,
            epochs=budget.generator_epochs,
            pairs=GENERATOR_PAIRS,
            segmentation_version=segmentation_version,
            lambda_anatomy=1.0 if use_anatomy else 0.0,
            model=dataclasses.replace(GENERATOR, use_anatomy=use_anatomy),
        )
        versions[row] = normal_synthesis.train_normal_synthesis(settings, config).version
    return versions


def run_twin_benchmark(
    settings: Settings, *, dataset: str, seeds: Sequence[int], budget: TwinBudget = TwinBudget(), split: str = "test"
) -> dict:
    """Train `seeds` of every learned row on `dataset`/train, choose checkpoints label-free, score every
    row on `dataset`/`split` once; the shared report shape, mean and sd over the seeds. Everything it
    trains is published in a bucket of its own (`benchmark_settings`)."""
    if not seeds or min(seeds) < 0:
        raise InvalidInput(f"the twin benchmark needs one or more seeds >= 0, got {list(seeds)}")
    if split in ("train", "val"):
        raise InvalidInput(f"the twin benchmark trains on train and chooses on val: score another split than {split!r}")
    settings = benchmark_settings(settings, dataset)
    registry = ModelRegistry(open_store(settings))
    seg = segmentation.train_segmentation(
        settings, segmentation.SegmentationTrainConfig(dataset=dataset, epochs=budget.segmentation_epochs)
    )
    seg_loaded = registry.load(segmentation.MODEL_NAME, seg.version)
    segmenter = segmenter_from_weights(seg_loaded.config, seg_loaded.weights)
    val, test = (HeldOut.of(read_phantom_split(registry.store, dataset, name)) for name in ("val", split))
    cpu = torch.device("cpu")
    runs, versions = [], []
    for seed in seeds:
        trained = _train_seed(settings, dataset, seed, seg.version, budget)
        translator = registry.load(matching_pairs.MODEL_NAME, trained["matching-pairs"])
        generators = [registry.load(normal_synthesis.MODEL_NAME, trained[row]) for row in ("anatomy_prior", "no_anatomy")]
        runs.append(twin_rows(test, trained_twins(translator, generators, segmenter, val.normal), cpu))
        versions.append(trained)
    once, chosen = no_learning_rows(val, test, segmenter, cpu)
    protocol = {
        "store_bucket": settings.store_bucket,
        "splits": {
            "train": f"{dataset}/train",
            "selection": f"{dataset}/val (no-learning rows); label-free: held-out training pairs and val image labels (learned rows)",
            "scored": {"dataset": dataset, "split": split, "abnormal_images": len(test.image), "normal_images": len(test.normal)},
        },
        "seeds": list(seeds),
        "budget": dataclasses.asdict(budget),
        "generator": f"SPADE, residual of either sign, trained on {normal_synthesis.PAIR_WORDS[GENERATOR_PAIRS]}",
        "selection": (
            f"label-free checkpoints: matching-pairs by {matching_pairs.SCORE} (the disease critic's verdict on val twins minus "
            f"the healthy-change share), normal-synthesis by {normal_synthesis.SCORE} (held-out pairs and normals of its "
            f"training split); {HIGHPASS_SELECTION}"
        ),
        "models": {
            segmentation.MODEL_NAME: seg.version,
            matching_pairs.MODEL_NAME: [v["matching-pairs"] for v in versions],
            f"{normal_synthesis.MODEL_NAME} (anatomy_prior)": [v["anatomy_prior"] for v in versions],
            f"{normal_synthesis.MODEL_NAME} (no_anatomy)": [v["no_anatomy"] for v in versions],
        },
        "lung_highpass": chosen,
    }
    return evaluation_report(protocol, benchmark_rows(once, runs))

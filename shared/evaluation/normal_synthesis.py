"""`twinray eval normal-synthesis`: the published twin generator, the matching-pairs translator whose
pseudo-pairs trained it, and the no-learning rows, on the healthy-twin benchmark
(twinray.shared.evaluation.twin_benchmark), in the shared report shape (twinray.shared.evaluation.report).
Over several trained seeds: `twinray.training.twin_benchmark`."""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch

from twinray.shared.data.phantoms.dataset import read_phantom_split
from twinray.shared.evaluation.report import evaluation_report, published_protocol
from twinray.shared.evaluation.twin import generator_twin
from twinray.shared.evaluation.twin_benchmark import HIGHPASS_SELECTION, HeldOut, benchmark_rows, no_learning_rows, twin_rows
from twinray.shared.models.components.twin import TwinFunction
from twinray.shared.models.matching_pairs.network import translator_from_weights, translator_twin
from twinray.shared.models.normal_synthesis.network import normal_synthesizer_from_weights
from twinray.shared.models.segmentation.network import segmenter_from_weights
from twinray.shared.platform.config import Settings
from twinray.shared.platform.registry import LoadedModel, ModelRegistry
from twinray.shared.platform.storage import open_store
from twinray.shared.synthesis.pseudo_pairs import calibrated_twin

MODEL_NAME = "normal-synthesis"
SEGMENTER_NAME = "segmentation"


def trained_twins(
    translator: LoadedModel, generators: Sequence[LoadedModel], segmenter: torch.nn.Module, val_normal: torch.Tensor
) -> dict[str, TwinFunction]:
    """The benchmark's twin rows of one trained seed: the translator raw and calibrated (its baseline
    measured on the val normals (N,1,H,W)), and each generator (`no_anatomy` when trained without the map)."""
    translate = translator_twin(translator_from_weights(translator.config, translator.weights), translator.config["input_size"])
    twins = {"cyclegan": translate, "cyclegan_calibrated": calibrated_twin(translate, val_normal, torch.device("cpu"))}
    for generator in generators:
        row = "anatomy_prior" if generator.config.get("use_anatomy", True) else "no_anatomy"
        twins[row] = generator_twin(normal_synthesizer_from_weights(generator.config, generator.weights), segmenter)
    return twins


def evaluate_published(
    settings: Settings, *, version: str = "latest", dataset: str = "cxr-phantoms", split: str = "test"
) -> dict:
    """`twinray eval normal-synthesis`: a published generator (row `anatomy_prior`), the translator and
    segmenter versions it was trained with, and the no-learning rows, scored once on `dataset`/`split`."""
    registry = ModelRegistry(open_store(settings))
    loaded = registry.load(MODEL_NAME, registry.resolve(MODEL_NAME, version))
    training = json.loads(registry.read_file(MODEL_NAME, loaded.version, "training.json"))
    seg = registry.load(SEGMENTER_NAME, training["segmentation"]["version"])
    segmenter = segmenter_from_weights(seg.config, seg.weights)
    translator = registry.load(training["matching_pairs"]["name"], training["matching_pairs"]["version"])
    val, test = (HeldOut.of(read_phantom_split(registry.store, dataset, name)) for name in ("val", split))
    cpu = torch.device("cpu")
    once, chosen = no_learning_rows(val, test, segmenter, cpu)
    rows = benchmark_rows(once, [twin_rows(test, trained_twins(translator, [loaded], segmenter, val.normal), cpu)])
    scored = {"dataset": dataset, "split": split, "abnormal_images": len(test.image), "normal_images": len(test.normal)}
    models = {translator.name: translator.version, MODEL_NAME: loaded.version, SEGMENTER_NAME: seg.version}
    protocol = published_protocol(scored, models, anatomy_by=SEGMENTER_NAME, lung_highpass=chosen)
    protocol["selection"] = f"{protocol['selection']}; {HIGHPASS_SELECTION}"
    return evaluation_report(protocol, rows)

"""`twinray eval normal-synthesis`: the published twin generator beside the matching-pairs translator
whose pseudo-pairs trained it, scored by one yardstick (twinray.shared.evaluation.twin), in the
shared report shape (twinray.shared.evaluation.report)."""

from __future__ import annotations

import json

from twinray.shared.data.phantoms.dataset import read_phantom_split
from twinray.shared.evaluation.report import evaluation_report, published_protocol, single
from twinray.shared.evaluation.twin import evaluate_twin_function, generator_twin
from twinray.shared.models.matching_pairs.network import translator_from_weights, translator_twin
from twinray.shared.models.normal_synthesis.network import normal_synthesizer_from_weights
from twinray.shared.models.segmentation.network import segmenter_from_weights
from twinray.shared.platform.config import Settings
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import open_store

MODEL_NAME = "normal-synthesis"
SEGMENTER_NAME = "segmentation"
ROWS = ("matching_pairs", "normal_synthesis")  # the baseline translator, then the generator (registry names, snake case)


def evaluate_published(
    settings: Settings, *, version: str = "latest", dataset: str = "cxr-phantoms", split: str = "test"
) -> dict:
    """`twinray eval normal-synthesis`: a published generator (row `normal_synthesis`) beside the
    matching-pairs translator whose pseudo-pairs trained it (row `matching_pairs`, the baseline it must
    beat), both scored by `twinray.shared.evaluation.twin.evaluate_twin_function` on held-out phantoms
    with the segmenter version the generator was trained with."""
    registry = ModelRegistry(open_store(settings))
    loaded = registry.load(MODEL_NAME, registry.resolve(MODEL_NAME, version))
    training = json.loads(registry.read_file(MODEL_NAME, loaded.version, "training.json"))
    seg = registry.load(SEGMENTER_NAME, training["segmentation"]["version"])
    segmenter = segmenter_from_weights(seg.config, seg.weights)
    generator = normal_synthesizer_from_weights(loaded.config, loaded.weights)
    translator = registry.load(training["matching_pairs"]["name"], training["matching_pairs"]["version"])
    baseline = translator_from_weights(translator.config, translator.weights)
    arrays = read_phantom_split(registry.store, dataset, split)
    abnormal = int((arrays.lesion_seed >= 0).sum())
    twins = (translator_twin(baseline, translator.config["input_size"]), generator_twin(generator, segmenter))
    rows = {
        row: {metric: single(value) for metric, value in evaluate_twin_function(twin, arrays, segmenter=segmenter).items()}
        for row, twin in zip(ROWS, twins)
    }
    scored = {"dataset": dataset, "split": split, "abnormal_images": abnormal, "normal_images": len(arrays) - abnormal}
    models = {translator.name: translator.version, MODEL_NAME: loaded.version, SEGMENTER_NAME: seg.version}
    return evaluation_report(published_protocol(scored, models, anatomy_by=SEGMENTER_NAME), rows)

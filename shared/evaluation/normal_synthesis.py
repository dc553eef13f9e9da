"""`twinray eval normal-synthesis`: the published twin generator beside the matching-pairs translator
whose pseudo-pairs trained it, scored by one yardstick (twinray.shared.evaluation.twin)."""

from __future__ import annotations

import json

from twinray.shared.data.phantoms.dataset import read_phantom_split
from twinray.shared.evaluation.twin import evaluate_twin_function, generator_twin
from twinray.shared.models.matching_pairs.network import translator_from_weights, translator_twin
from twinray.shared.models.normal_synthesis.network import normal_synthesizer_from_weights
from twinray.shared.models.segmentation.network import segmenter_from_weights
from twinray.shared.platform.config import Settings
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import open_store

MODEL_NAME = "normal-synthesis"
SEGMENTER_NAME = "segmentation"


def evaluate_published(
    settings: Settings, *, version: str = "latest", dataset: str = "cxr-phantoms", split: str = "test"
) -> dict:
    """`twinray eval normal-synthesis`: a published generator (`anatomy_prior`) beside the CycleGAN
    translator whose pseudo-pairs trained it (`cyclegan`, the baseline it must beat), both scored by
    `twinray.shared.evaluation.twin.evaluate_twin_function` on held-out phantoms with the segmenter
    version the generator was trained with."""
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
    return {
        "segmentation": {"name": SEGMENTER_NAME, "version": seg.version},
        "dataset": dataset,
        "split": split,
        "abnormal_images": abnormal,
        "normal_images": len(arrays) - abnormal,
        "cyclegan": {
            "model": {"name": translator.name, "version": translator.version},
            **evaluate_twin_function(translator_twin(baseline, translator.config["input_size"]), arrays, segmenter=segmenter),
        },
        "anatomy_prior": {
            "model": {"name": MODEL_NAME, "version": loaded.version},
            **evaluate_twin_function(generator_twin(generator, segmenter), arrays, segmenter=segmenter),
        },
    }

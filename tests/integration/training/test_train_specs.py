"""The contract every trainer keeps: each spec of the registry trains one tiny epoch on Ray and
publishes a complete version (files matching their sha256s), a card that names the model and its
score, finite score metrics, and a training.json that rebuilds the config it trained with.

The runs publish into a bucket of their own, holding copies of the session's datasets and models, so
the session's "latest" versions (which the services resolve) stay the session fixtures' own."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from twinray.shared.models.components.diffusion import DiffusionConfig
from twinray.shared.models.detection.network import DetectorConfig
from twinray.shared.models.matching_pairs.network import TranslatorConfig
from twinray.shared.models.normal_synthesis.network import SpadeConfig
from twinray.shared.models.segmentation.network import SegmenterConfig
from twinray.shared.platform.registry import STANDARD_FILES, ModelRegistry
from twinray.shared.platform.storage import open_store
from twinray.training.harness import train_and_publish
from twinray.training.specs import TRAIN_SPECS

pytestmark = pytest.mark.integration

DIFFUSION = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 4}
TINY_UNET = DiffusionConfig(image_size=16, channels=(8, 16), norm_groups=4, train_timesteps=50)
# One tiny epoch per model: the fields given to its spec's `make_config`, from the session fixtures.
TINY: dict[str, Callable[[Callable[[str], Any]], dict[str, Any]]] = {
    "segmentation": lambda fixture: {
        "dataset": fixture("phantom_dataset"),
        "epochs": 1,
        "batch_size": 4,
        "model": SegmenterConfig(channels=(4, 8)),
    },
    "matching-pairs": lambda fixture: {
        "dataset": fixture("phantom_dataset"),
        "epochs": 1,
        "batch_size": 4,
        "critic_warmup_steps": 2,
        "discriminator_channels": 4,
        "model": TranslatorConfig(input_size=32, channels=4, n_res_blocks=1),
    },
    "normal-synthesis": lambda fixture: {
        "dataset": fixture("phantom_dataset"),
        "pseudo_pairs": fixture("pseudo_pair_dataset"),
        "segmentation_version": str(fixture("trained_segmenter").version),
        "epochs": 1,
        "batch_size": 4,
        "discriminator_channels": 4,
        "model": SpadeConfig(input_size=32, channels=(8, 16, 16), n_blocks=1, hidden=8),
    },
    "defect-masks": lambda fixture: {"dataset": fixture("product_dataset"), **DIFFUSION, "model": TINY_UNET},
    "normal-manifold": lambda fixture: {"dataset": fixture("product_dataset"), **DIFFUSION, "model": TINY_UNET},
    "defect-encoder": lambda fixture: {
        "dataset": fixture("product_dataset"),
        **DIFFUSION,
        "real_count": 4,
        "normal_manifold_version": str(fixture("trained_normal_manifold").version),
    },
    "detection": lambda fixture: {
        "dataset": fixture("phantom_dataset"),
        "variant": "attention",
        "residuals": fixture("twin_residual_dataset"),
        "epochs": 1,
        "batch_size": 4,
        "model": DetectorConfig(fpn_channels=16, attention_hidden=4),
    },
}


def test_every_spec_has_a_tiny_run():
    assert set(TINY) == set(TRAIN_SPECS)


@pytest.mark.parametrize("name", list(TRAIN_SPECS))
def test_spec_trains_and_publishes_a_complete_version(name, request, ray_cluster, twinray_settings):
    spec = TRAIN_SPECS[name]
    config = spec.make_config(**TINY[name](request.getfixturevalue))
    settings = dataclasses.replace(twinray_settings, store_bucket="train-specs")
    store = open_store(settings)
    session = open_store(twinray_settings)
    for prefix in ("datasets/", "models/"):  # what the run depends on, as the session fixtures made it
        for key in session.list(prefix):
            store.put_bytes(key, session.get_bytes(key))

    version = train_and_publish(spec, settings, config)

    assert version.name == name
    prefix = f"models/{name}/{version.version}/"
    assert set(version.manifest["files"]) == set(STANDARD_FILES)
    for filename, entry in version.manifest["files"].items():
        assert hashlib.sha256(store.get_bytes(prefix + filename)).hexdigest() == entry["sha256"], filename
    loaded = ModelRegistry(store).load(name, version.version)
    assert loaded.metrics["epoch"] == 1 and math.isfinite(loaded.metrics[spec.score])
    card = store.get_bytes(prefix + "card.md").decode()
    assert f"`{name}`" in card and f"`{spec.score}` = {loaded.metrics[spec.score]:.6g}" in card
    training = json.loads(store.get_bytes(prefix + "training.json"))
    fields = {field.name for field in dataclasses.fields(spec.config_class)}
    trained = spec.config_class.from_dict({key: value for key, value in training.items() if key in fields})
    assert (trained.dataset, trained.epochs, trained.seed) == (config.dataset, 1, config.seed)
    assert training["best_epoch"] == 1 and training["ray_run"]

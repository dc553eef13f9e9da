"""A real Ray Train run (2 CPU workers, gloo) that checkpoints into the store and publishes a version."""
from __future__ import annotations

import json

import pytest

from services.cli import main
from shared.registry import ModelRegistry
from shared.storage import open_store
from shared.models.segmenter import AnatomySegmenter, SegmenterConfig
from training.segmentation import evaluate_published, evaluate_split

pytestmark = pytest.mark.integration


def test_two_worker_run_publishes_a_complete_version(trained_segmenter, twinray_settings):
    store = open_store(twinray_settings)
    loaded = ModelRegistry(store).load("segmentation", trained_segmenter.version)
    assert loaded.config["input_size"] == 64  # taken from the dataset it was trained on
    assert 0.0 <= loaded.metrics["val_mean_dice"] <= 1.0
    assert loaded.metrics["epoch"] >= 1
    training = json.loads(store.get_bytes(f"models/segmentation/{loaded.version}/training.json"))
    assert training["workers"] == 2
    assert any(key.startswith("checkpoints/") for key in store.list("checkpoints/"))


def test_training_beats_an_untrained_network(trained_segmenter, twinray_settings, phantom_dataset):
    trained = evaluate_published(twinray_settings, version=str(trained_segmenter.version), dataset=phantom_dataset)
    loaded = ModelRegistry(open_store(twinray_settings)).load("segmentation", trained_segmenter.version)
    untrained_model = AnatomySegmenter(SegmenterConfig.from_dict(loaded.config))
    untrained = evaluate_split(untrained_model, open_store(twinray_settings), phantom_dataset)
    assert trained["mean_dice"] > untrained["mean_dice"] + 0.1


def test_eval_cli_prints_one_json_object(trained_segmenter, phantom_dataset, capsys):
    assert main(["eval", "segmentation", "--json", "--dataset", phantom_dataset]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["per_class"]) >= {"lung_right", "lung_left", "heart"}
    assert 0.0 <= report["mean_dice"] <= 1.0

"""A real Ray Train run (2 CPU workers, gloo) that checkpoints into the store and publishes a version."""

from __future__ import annotations

import json

import pytest

from twinray.services.cli.main import main
from twinray.shared.evaluation.report import check_shape
from twinray.shared.evaluation.segmentation import evaluate_published, evaluate_split
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import open_store

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

    def mean_dice(report: dict) -> float:
        return report["rows"]["segmentation"]["mean_dice"]["mean"]

    assert mean_dice(trained) > mean_dice(untrained) + 0.1
    assert trained["protocol"]["models"] == {"segmentation": trained_segmenter.version}


def test_eval_cli_prints_the_shared_report_on_its_last_line(trained_segmenter, phantom_dataset, capsys):
    assert main(["eval", "segmentation", "--json", "--dataset", phantom_dataset]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    check_shape(report)
    metrics = report["rows"]["segmentation"]
    assert set(metrics) >= {"mean_dice", "dice_lung_right", "dice_lung_left", "dice_heart"}
    assert 0.0 <= metrics["mean_dice"]["mean"] <= 1.0 and metrics["mean_dice"]["n"] == 1
    assert report["protocol"]["splits"]["scored"]["images"] == 8


def test_checkpoints_and_the_published_version_land_in_s3(ray_cluster, moto_s3, twinray_settings, tmp_path):
    """The MinIO path end to end: dataset, Ray Train checkpoints (pyarrow S3 filesystem) and registry."""
    import dataclasses

    from twinray.shared.data.phantoms.dataset import write_phantom_dataset
    from twinray.shared.models.segmentation.network import SegmenterConfig
    from twinray.training.segmentation import SegmentationTrainConfig, train_segmentation

    bucket = f"ckpt-{tmp_path.name[-8:].lower().replace('_', '-')}"
    settings = dataclasses.replace(
        twinray_settings,
        store_endpoint=moto_s3.endpoint,
        store_access_key=moto_s3.access_key,
        store_secret_key=moto_s3.secret_key,
        store_bucket=bucket,
    )
    store = open_store(settings)
    write_phantom_dataset(store, "s3-phantoms", size=64, splits={"train": 8, "val": 4, "test": 4}, seed=3, progress=False)
    config = SegmentationTrainConfig(dataset="s3-phantoms", epochs=1, batch_size=4, model=SegmenterConfig(channels=(4, 8)))
    version = train_segmentation(settings, config)

    assert version.manifest_ref.bucket == bucket
    assert ModelRegistry(store).load("segmentation", version.version).config["input_size"] == 64
    assert any(key.endswith("model.pt") for key in store.list("checkpoints/"))

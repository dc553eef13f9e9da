"""A real Ray Train run (2 CPU workers, gloo) of the SPADE generator on pseudo-pairs, published with
the segmenter and translator versions it depended on, then evaluated against the true twins."""

from __future__ import annotations

import json

import pytest
import torch

from twinray.shared.evaluation.normal_synthesis import evaluate_published
from twinray.shared.evaluation.report import check_shape
from twinray.shared.models.normal_synthesis.network import normal_synthesizer_from_weights
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import open_store

pytestmark = pytest.mark.integration


def test_two_worker_run_publishes_a_version_with_its_dependencies(
    trained_normal_synthesizer, trained_segmenter, pseudo_pair_dataset, twinray_settings
):
    store = open_store(twinray_settings)
    loaded = ModelRegistry(store).load("normal-synthesis", trained_normal_synthesizer.version)
    training = json.loads(store.get_bytes(f"models/normal-synthesis/{loaded.version}/training.json"))
    assert training["workers"] == 2
    assert training["segmentation"] == {"name": "segmentation", "version": trained_segmenter.version}
    assert loaded.config["segmentation_version"] == trained_segmenter.version
    assert training["matching_pairs"]["name"] == "matching-pairs"
    assert training["pseudo_pairs"] == pseudo_pair_dataset
    for metric in ("val_residual_in_lesion", "val_residual_auroc", "val_anatomy_dice"):
        assert 0.0 <= loaded.metrics[metric] <= 1.0
    # Chosen without lesion masks: minus the held-out pairs' error and the change on held-out normals.
    assert loaded.metrics["val_selection"] == pytest.approx(
        -(loaded.metrics["val_held_out_pair_error"] + loaded.metrics["val_healthy_change"])
    )
    assert loaded.metrics["val_l1_to_twin"] >= 0.0
    assert any(key.startswith("checkpoints/normal-synthesis-") for key in store.list("checkpoints/"))


def test_published_generator_changes_either_way_and_not_nothing(trained_normal_synthesizer, twinray_settings):
    loaded = ModelRegistry(open_store(twinray_settings)).load("normal-synthesis", trained_normal_synthesizer.version)
    assert loaded.config["negative_residual"] is False  # the default: a pneumothorax's twin adds density back
    generator = normal_synthesizer_from_weights(loaded.config, loaded.weights)
    image = torch.rand(2, 1, 32, 32)
    anatomy = torch.randint(0, 8, (2, 32, 32))
    with torch.no_grad():
        twin = generator(image, anatomy)
    assert 0.0 <= twin.min() and twin.max() <= 1.0 and (twin - image).abs().max() > 1e-4


def test_evaluation_is_the_twin_benchmark_of_the_published_models(trained_normal_synthesizer, phantom_dataset, twinray_settings):
    report = evaluate_published(twinray_settings, version=str(trained_normal_synthesizer.version), dataset=phantom_dataset)
    check_shape(report)
    models = report["protocol"]["models"]
    assert models["normal-synthesis"] == trained_normal_synthesizer.version and "matching-pairs" in models
    assert report["protocol"]["lung_highpass"].startswith("highpass_")
    scored = report["protocol"]["splits"]["scored"]
    assert scored["split"] == "test" and scored["abnormal_images"] + scored["normal_images"] == 8
    assert list(report["rows"]) == [
        "do_nothing",
        "lung_intensity",
        "lung_highpass",
        "cyclegan",
        "cyclegan_calibrated",
        "anatomy_prior",
    ]
    rows = report["rows"]
    assert rows["do_nothing"]["auroc_in_lung"]["mean"] == 0.5 and rows["do_nothing"]["lesion_recall"]["mean"] == 0.0
    for name, result in rows.items():
        # One published version each; a metric with nothing to measure (a class v1 lacks) is null.
        assert all(stat["n"] == 1 and stat["sd"] in (0.0, None) for stat in result.values())
        assert 0.0 <= result["auprc_in_lung"]["mean"] <= 1.0 and "auprc_in_lung/opacity" in result, name
    for name in ("cyclegan", "cyclegan_calibrated", "anatomy_prior"):
        assert rows[name]["identity_change"]["mean"] >= 0.0 and rows[name]["ssim"]["mean"] > 0.5

"""The downstream proof of synthetic defects: the segmenter learns, and the whole evaluation runs on
the tiny product dataset."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from twinray.shared.evaluation.defect_augmentation import (
    AugmentationEvalConfig,
    SegmenterBudget,
    defect_probability,
    evaluate_augmentation,
    score_segmenter,
    train_defect_segmenter,
    tuned_row,
)
from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.storage import open_store
from twinray.shared.synthesis.defects import DefectGenerators


def _squares(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy dark surfaces with one bright square each: a trivially separable defect."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.1, 0.3, (count, 16, 16)).astype(np.float32)
    masks = np.zeros((count, 16, 16), bool)
    for image, mask in zip(images, masks):
        top, left, side = *rng.integers(1, 10, 2), rng.integers(3, 6)
        mask[top : top + side, left : left + side] = True
        image[mask] = rng.uniform(0.8, 0.9)
    return images, masks


def test_segmenter_learns_a_separable_toy_deterministically():
    images, masks = _squares(24, 0)
    budget = SegmenterBudget(channels=(8, 16), epochs=4, steps_per_epoch=15, batch_size=8, learning_rate=3e-3, seed=1)
    model = train_defect_segmenter(images, masks, budget)
    test_images, test_masks = _squares(8, 1)
    scores = score_segmenter(model, test_images, test_masks)
    chance = test_masks.mean()  # IoU of calling every pixel a defect
    assert scores["iou"] > 0.5 > 5 * chance and scores["pixel_auroc"] > 0.95, scores
    again = train_defect_segmenter(images, masks, budget)
    assert torch.equal(defect_probability(model, test_images), defect_probability(again, test_images))
    with pytest.raises(InvalidInput, match="matching"):
        train_defect_segmenter(images, masks[:3], budget)


def test_tuned_row_keeps_the_share_best_on_validation_and_averages_its_repeats():
    """The row's scores are those of the val-best share, the mean of its seeds' test scores."""
    train, val, test = _squares(24, 0), _squares(8, 2), _squares(8, 1)
    budget = SegmenterBudget(channels=(8, 16), epochs=2, steps_per_epoch=10, batch_size=8, learning_rate=3e-3, seed=4)
    config = AugmentationEvalConfig(segmenter=budget, shares=(0.25, 1.0), repeats=2)
    row = tuned_row(train, None, val, test, config, "cpu")
    by_share = row["val_iou_by_share"]
    assert (
        row["share"] == max(config.shares, key=lambda share: by_share[str(share)])
        and row["val_iou"] == by_share[str(row["share"])]
    )
    chosen = [dataclasses.replace(budget, defect_fraction=row["share"], seed=budget.seed + r) for r in range(2)]
    test_ious = [score_segmenter(train_defect_segmenter(*train, b), *test)["iou"] for b in chosen]
    assert row["iou"] == pytest.approx(np.mean(test_ious)) and row["iou_std"] == pytest.approx(np.std(test_ious))
    assert test_ious[0] != test_ious[1]  # the repeats are different seeds
    with pytest.raises(InvalidInput, match="shares"):
        AugmentationEvalConfig(shares=(0.0,)).validate(20)


def test_evaluate_augmentation_end_to_end(twinray_settings, product_dataset, tiny_ddpm):
    config = AugmentationEvalConfig(
        dataset=product_dataset,
        real_counts=(2, 3),
        synthetic_count=4,
        sample_steps=3,
        seed=5,
        segmenter=SegmenterBudget(channels=(8, 16), epochs=2, steps_per_epoch=3, batch_size=4),
        classifier_epochs=1,
        classifier_steps_per_epoch=3,
        kid_subsets=5,
    )
    tiny, make = tiny_ddpm
    generators = DefectGenerators(make(0), tiny, make(1), tiny, encoder=None, versions={"defect-masks": "untrained"})
    report = evaluate_augmentation(open_store(twinray_settings), config, generators)
    assert json.loads(json.dumps(report, allow_nan=False)) == report  # strict JSON
    assert set(report["rows"]) == {"real_only", "real_plus_A", "real_plus_B"}
    for row in report["rows"].values():
        assert set(row) == {"2", "3"}
        for scores in row.values():
            assert 0.0 <= scores["iou"] <= 1.0 and 0.0 <= scores["pixel_auroc"] <= 1.0
            assert scores["share"] in config.shares and set(scores["val_iou_by_share"]) == {str(s) for s in config.shares}
            assert scores["iou_std"] == 0.0  # one repeat
    assert (
        report["rows"]["real_plus_A"]["3"]["train_synthetic"] == 4 and report["rows"]["real_only"]["3"]["train_real_defects"] == 3
    )
    assert set(report["relative_gain"]) == {"real_plus_A", "real_plus_B"}
    assert set(report["relative_gain"]["real_plus_B"]["2"]) == {"iou", "mean_image_iou", "pixel_auroc"}
    for method in ("A", "B", "real_train"):
        assert set(report["realism"][method]) == {"2", "3"} and "kid_mean" in report["realism"][method]["2"]
    for method in ("A", "B"):
        assert set(report["diversity"][method]["3"]) == {"feature_distance", "ssim_diversity"}
    assert "CropClassifier" in report["feature_extractor"] and report["diversity_measures"]
    settings = report["settings"]
    assert settings["seed"] == 5 and settings["synthetic_count"] == 4 and settings["real_counts"] == [2, 3]
    assert settings["segmenter"]["epochs"] == 2 and settings["image_size"] == 32 and settings["crop_size"] == 16
    assert settings["model_versions"]["2"] == {"defect-masks": "untrained"} and settings["encoder"] == {"2": False, "3": False}
    assert settings["validation_images"] == {"val_defect": 6, "val_normal": 6}
    with pytest.raises(InvalidInput, match="train_defect split has 5"):
        evaluate_augmentation(
            open_store(twinray_settings), AugmentationEvalConfig(dataset=product_dataset, real_counts=(5, 20)), generators
        )


@pytest.mark.integration
def test_cli_evaluates_the_published_models(trained_mask_ddpm, trained_normal_manifold, product_dataset, capsys):
    """`twinray eval defect-augmentation --json` loads the latest published DDPMs (here without the
    encoder: plain RePaint) and prints the documented report."""
    from twinray.services.cli.main import main

    argv = [
        "eval",
        "defect-augmentation",
        "--dataset",
        product_dataset,
        "--k",
        "2",
        "--synthetic",
        "4",
        "--steps",
        "3",
        "--encoder-version",
        "",
        "--json",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["rows"]) == {"real_only", "real_plus_A", "real_plus_B"}
    assert all(0.0 <= report["rows"][row]["2"]["iou"] <= 1.0 for row in report["rows"])
    assert report["settings"]["model_versions"]["2"]["defect-masks"] == str(trained_mask_ddpm.version)
    assert "defect-encoder" not in report["settings"]["model_versions"]["2"]
    assert main([*argv, "--k", "99"]) == 2  # more real defects than the split holds: a one-line error

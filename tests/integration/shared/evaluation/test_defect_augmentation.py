"""The downstream proof of synthetic defects: the segmenter learns, and the whole evaluation runs on
the tiny product dataset."""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
import pytest
import torch

from twinray.shared.evaluation import defect_augmentation
from twinray.shared.evaluation.defect_augmentation import (
    AugmentationEvalConfig,
    SegmenterBudget,
    defect_probability,
    evaluate_augmentation,
    score_segmenter,
    train_defect_segmenter,
    tuned_row,
)
from twinray.shared.evaluation.report import check_shape
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
    metrics, selection = tuned_row(train, None, val, test, config, "cpu")
    by_share = selection["val_iou_by_share"]
    assert (
        selection["share"] == max(config.shares, key=lambda share: by_share[str(share)])
        and selection["val_iou"] == by_share[str(selection["share"])]
    )
    chosen = [dataclasses.replace(budget, defect_fraction=selection["share"], seed=budget.seed + r) for r in range(2)]
    test_ious = [score_segmenter(train_defect_segmenter(*train, b), *test)["iou"] for b in chosen]
    assert metrics["iou"] == {"mean": pytest.approx(np.mean(test_ious)), "sd": pytest.approx(np.std(test_ious)), "n": 2}
    assert set(metrics) == {"iou", "mean_image_iou", "pixel_auroc", "normal_false_alarm_rate"}
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
    check_shape(report)
    rows = report["rows"]
    synthetic = [f"real_plus_{method}@k={k}" for k in (2, 3) for method in ("mask_blend", "conditioned_ddpm")]
    assert list(rows) == [
        "real_only@k=2",
        *synthetic[:2],
        "real_only@k=3",
        *synthetic[2:],
        "held_out_real",
    ]
    scores = {"iou", "mean_image_iou", "pixel_auroc", "normal_false_alarm_rate"}
    realism, gains = {"kid", "kid_subset_sd"}, {"iou_gain", "mean_image_iou_gain", "pixel_auroc_gain"}
    for k in (2, 3):
        assert set(rows[f"real_only@k={k}"]) == scores | realism  # KID of the k real train defects
    for row in synthetic:
        assert set(rows[row]) == scores | realism | gains | {"feature_distance", "ssim_diversity"}
        base = rows[f"real_only@k={row[-1]}"]["iou"]["mean"]
        assert rows[row]["iou_gain"]["mean"] == pytest.approx((rows[row]["iou"]["mean"] - base) / base)
    assert set(rows["held_out_real"]) == {"feature_distance", "ssim_diversity"}
    for row, metrics in rows.items():
        if row != "held_out_real":
            assert 0.0 <= metrics["iou"]["mean"] <= 1.0 and 0.0 <= metrics["pixel_auroc"]["mean"] <= 1.0
            assert metrics["iou"]["sd"] == 0.0 and metrics["iou"]["n"] == 1  # one repeat
    protocol = report["protocol"]
    selection = protocol["selection"]["rows"]
    assert set(selection) == set(rows) - {"held_out_real"}
    for chosen in selection.values():
        assert chosen["share"] in config.shares and set(chosen["val_iou_by_share"]) == {str(s) for s in config.shares}
    assert protocol["seeds"] == {"segmenter": [0], "synthesis": 5}
    assert protocol["budget"]["real_defects"] == [2, 3] and protocol["budget"]["synthetic_defects"] == 4
    assert protocol["budget"]["segmenter"]["epochs"] == 2 and protocol["budget"]["image_size"] == 32
    assert protocol["splits"]["selection"] == {"val_defect": 6, "val_normal": 6}
    assert protocol["splits"]["scored"] == {"test_defect": 8, "test_normal": 8}
    assert "CropClassifier" in protocol["realism"]["feature_extractor"] and protocol["realism"]["crop_size"] == 16
    assert protocol["models"]["2"] == {"defect-masks": "untrained"} and protocol["encoder"] == {"2": False, "3": False}
    assert protocol["config"]["seed"] == 5 and protocol["config"]["methods"] == ["mask_blend", "conditioned_ddpm"]
    with pytest.raises(InvalidInput, match="train_defect split has 5"):
        evaluate_augmentation(
            open_store(twinray_settings), AugmentationEvalConfig(dataset=product_dataset, real_counts=(5, 20)), generators
        )


@pytest.mark.integration
def test_cli_evaluates_the_published_models(trained_mask_ddpm, trained_normal_manifold, product_dataset, capsys, monkeypatch):
    """`twinray eval defect-augmentation --json` loads the latest published DDPMs (here without the
    encoder: plain RePaint) and prints the report in the shared shape on its last line. The
    segmenters and the crop classifier get a tiny budget: this checks the wiring, not the scores."""
    from twinray.services.cli.main import main

    tiny = functools.partial(
        AugmentationEvalConfig,
        segmenter=SegmenterBudget(channels=(8, 16), epochs=2, steps_per_epoch=3, batch_size=4),
        classifier_epochs=1,
        classifier_steps_per_epoch=3,
        kid_subsets=5,
    )
    monkeypatch.setattr(defect_augmentation, "AugmentationEvalConfig", tiny)

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
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    check_shape(report)
    rows = ["real_only@k=2", "real_plus_mask_blend@k=2", "real_plus_conditioned_ddpm@k=2"]
    assert list(report["rows"]) == [*rows, "held_out_real"]
    assert all(0.0 <= report["rows"][row]["iou"]["mean"] <= 1.0 for row in rows)
    assert report["protocol"]["models"]["2"]["defect-masks"] == str(trained_mask_ddpm.version)
    assert "defect-encoder" not in report["protocol"]["models"]["2"]
    assert report["protocol"]["budget"]["segmenter_steps"] == 6
    assert main([*argv, "--methods", "mask_blend"]) == 0
    assert list(json.loads(capsys.readouterr().out.splitlines()[-1])["rows"]) == [*rows[:2], "held_out_real"]
    assert main([*argv, "--k", "99"]) == 2  # more real defects than the split holds: a one-line error

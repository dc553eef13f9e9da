"""The downstream proof of synthetic defects: the segmenter learns, both synthetic sets keep the
normal image outside their exact masks, and the whole evaluation runs on the tiny product dataset."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from shared.errors import InvalidInput
from shared.models.defect_encoder import DefectEncoder, DefectEncoderConfig
from shared.models.diffusion import DiffusionConfig, build_unet
from shared.products.dataset import read_product_split
from shared.storage import open_store
from training.defect_augmentation import (
    AugmentationEvalConfig,
    DefectGenerators,
    SegmenterBudget,
    defect_probability,
    evaluate_augmentation,
    pick_normals,
    real_appearances,
    sample_masks,
    score_segmenter,
    synthesize_a,
    synthesize_b,
    train_defect_segmenter,
    unit_float,
)

TINY = DiffusionConfig(image_size=16, channels=(8, 16), norm_groups=4, train_timesteps=50)


def _tiny_unet(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_unet(TINY)


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


@pytest.fixture
def product_arrays(twinray_settings, product_dataset):
    store = open_store(twinray_settings)
    return {split: read_product_split(store, product_dataset, split) for split in ("train_normal", "train_defect")}


def test_approach_a_keeps_the_normal_outside_nonempty_masks(product_arrays):
    normals = unit_float(product_arrays["train_normal"].image)
    real = product_arrays["train_defect"]
    masks = sample_masks(_tiny_unet(0), TINY, 6, 32, seed=2, steps=4, min_pixels=3)
    assert masks.shape == (6, 32, 32) and masks.dtype == bool and (masks.sum(axis=(1, 2)) >= 3).all()
    assert np.array_equal(masks, sample_masks(_tiny_unet(0), TINY, 6, 32, seed=2, steps=4, min_pixels=3))
    picks = pick_normals(6, len(normals), seed=2)
    made = synthesize_a(normals, masks, picks, real_appearances(unit_float(real.image[:2]), real.mask[:2]))
    assert made.image.shape == (6, 32, 32) and made.image.dtype == np.float32
    for image, mask, pick in zip(made.image, made.mask, made.normal_index):
        assert np.array_equal(image[~mask], normals[pick][~mask])
        assert not np.allclose(image[mask], normals[pick][mask])  # something was drawn inside
    with pytest.raises(InvalidInput, match="non-empty masks"):  # no mask can have more pixels than the image
        sample_masks(_tiny_unet(0), TINY, 2, 32, steps=2, min_pixels=32 * 32 + 1, max_draws=1)


@pytest.mark.parametrize("with_encoder", [False, True])
def test_approach_b_keeps_the_normal_outside_exactly(product_arrays, with_encoder):
    normals = unit_float(product_arrays["train_normal"].image)
    masks = np.zeros((3, 32, 32), bool)
    masks[0, 4:9, 4:12] = True
    masks[1, 20:30, 3:6] = True
    masks[2, 15, 15] = True  # one pixel: still a defect after the DDPM's 16 px grid
    encoder = DefectEncoder(DefectEncoderConfig(), TINY) if with_encoder else None
    picks = np.array([0, 5, 7])
    made = synthesize_b(_tiny_unet(1), TINY, encoder, normals, masks, picks, seed=3, steps=3, batch=2)
    assert made.image.shape == (3, 32, 32) and np.array_equal(made.mask, masks)
    for image, mask, pick in zip(made.image, masks, picks):
        assert np.array_equal(image[~mask], normals[pick][~mask])
        assert not np.array_equal(image[mask], normals[pick][mask])
        assert 0.0 <= image.min() and image.max() <= 1.0


def test_evaluate_augmentation_end_to_end(twinray_settings, product_dataset):
    config = AugmentationEvalConfig(
        dataset=product_dataset, real_counts=(2, 3), synthetic_count=4, sample_steps=3, seed=5,
        segmenter=SegmenterBudget(channels=(8, 16), epochs=2, steps_per_epoch=3, batch_size=4),
        classifier_epochs=1, classifier_steps_per_epoch=3, kid_subsets=5,
    )
    generators = DefectGenerators(_tiny_unet(0), TINY, _tiny_unet(1), TINY, encoder=None, versions={"defect-masks": "untrained"})
    started = time.monotonic()
    report = evaluate_augmentation(open_store(twinray_settings), config, generators)
    assert time.monotonic() - started < 60
    assert json.loads(json.dumps(report, allow_nan=False)) == report  # strict JSON
    assert set(report["rows"]) == {"real_only", "real_plus_A", "real_plus_B"}
    for row in report["rows"].values():
        assert set(row) == {"2", "3"}
        for scores in row.values():
            assert 0.0 <= scores["iou"] <= 1.0 and 0.0 <= scores["pixel_auroc"] <= 1.0
    assert report["rows"]["real_plus_A"]["3"]["train_synthetic"] == 4 and report["rows"]["real_only"]["3"]["train_real_defects"] == 3
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
    with pytest.raises(InvalidInput, match="train_defect split has 5"):
        evaluate_augmentation(open_store(twinray_settings), AugmentationEvalConfig(dataset=product_dataset, real_counts=(5, 20)), generators)


@pytest.mark.integration
def test_cli_evaluates_the_published_models(trained_mask_ddpm, trained_normal_manifold, product_dataset, capsys):
    """`twinray eval defect-augmentation --json` loads the latest published DDPMs (here without the
    encoder: plain RePaint) and prints the documented report."""
    from services.cli import main

    argv = ["eval", "defect-augmentation", "--dataset", product_dataset, "--k", "2", "--synthetic", "4", "--steps", "3", "--encoder-version", "", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["rows"]) == {"real_only", "real_plus_A", "real_plus_B"}
    assert all(0.0 <= report["rows"][row]["2"]["iou"] <= 1.0 for row in report["rows"])
    assert report["settings"]["model_versions"]["2"]["defect-masks"] == str(trained_mask_ddpm.version)
    assert "defect-encoder" not in report["settings"]["model_versions"]["2"]
    assert main([*argv, "--k", "99"]) == 2  # more real defects than the split holds: a one-line error

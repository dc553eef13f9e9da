"""Defect segmentation scores against hand-computed values; KID and diversity behave as they should."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from twinray.shared.evaluation import defect_metrics as dm


def test_scores_match_hand_computed_values():
    probability = torch.tensor([[[0.9, 0.2], [0.6, 0.4]], [[0.7, 0.1], [0.1, 0.1]]])
    target = torch.tensor([[[1, 0], [0, 1]], [[0, 0], [0, 0]]], dtype=torch.bool)
    scores = dm.defect_segmentation_scores(probability, target)
    # predicted > 0.5: (0,0) TP, (1,0) FP, (1,1) FN on the defect image; one FP on the normal one
    assert scores["iou"] == pytest.approx(1 / 4)
    assert scores["mean_image_iou"] == pytest.approx(1 / 3)  # defect images only
    assert scores["normal_false_alarm_rate"] == pytest.approx(1.0)
    # positives 0.9, 0.4 against negatives 0.2, 0.6, 0.7, 0.1, 0.1, 0.1: 6 + 4 of 12 pairs ordered
    assert scores["pixel_auroc"] == pytest.approx(10 / 12)


def test_perfect_and_empty_predictions():
    target = torch.zeros(3, 8, 8, dtype=torch.bool)
    target[0, 2:5, 2:5] = True
    perfect = dm.defect_segmentation_scores(target.float(), target)
    assert perfect == {"iou": 1.0, "mean_image_iou": 1.0, "pixel_auroc": 1.0, "normal_false_alarm_rate": 0.0}
    nothing = dm.defect_segmentation_scores(torch.zeros(3, 8, 8), target)
    assert nothing["iou"] == 0.0 and nothing["mean_image_iou"] == 0.0 and nothing["pixel_auroc"] == pytest.approx(0.5)
    assert math.isnan(dm.defect_segmentation_scores(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool))["iou"])
    with pytest.raises(ValueError, match="one shape"):
        dm.defect_segmentation_scores(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5, dtype=torch.bool))


def test_crops_centre_on_the_defect_and_stay_inside():
    images = np.arange(2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16)
    masks = np.zeros((2, 16, 16), bool)
    masks[0, 6:8, 6:8] = True  # centre (7, 7): crop rows/cols 3..10
    masks[1, 0, 15] = True  # in the corner: shifted inside
    crops = dm.defect_crops(images, masks, 8)
    assert crops.shape == (2, 1, 8, 8)
    assert torch.equal(crops[0, 0], torch.from_numpy(images[0, 3:11, 3:11]))
    assert torch.equal(crops[1, 0], torch.from_numpy(images[1, 0:8, 8:16]))
    assert dm.random_crops(images, 8, 5, seed=1).shape == (5, 1, 8, 8)
    assert torch.equal(dm.random_crops(images, 8, 5, seed=1), dm.random_crops(images, 8, 5, seed=1))


def _blobs(count: int, seed: int) -> torch.Tensor:
    """Smooth bright blobs at random places: a coherent set of 'defect' crops."""
    generator = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij"))
    centres = torch.rand(count, 2, 1, 1, generator=generator) * 8 + 4
    radius = torch.rand(count, 1, 1, generator=generator) * 2 + 2
    return torch.exp(-((grid[None] - centres) ** 2).sum(1) / (2 * radius**2))[:, None] * 0.8 + 0.1


def test_kid_of_a_set_against_itself_is_near_zero_and_against_noise_large():
    torch.manual_seed(0)
    extractor = dm.FeatureExtractor(dm.CropClassifier())
    real, other = _blobs(40, 1), _blobs(40, 2)
    noise = torch.rand(40, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    same = dm.kernel_inception_distance(extractor, real, real, subsets=20, seed=0)
    similar = dm.kernel_inception_distance(extractor, real, other, subsets=20, seed=0)
    different = dm.kernel_inception_distance(extractor, real, noise, subsets=20, seed=0)
    assert abs(same["kid_mean"]) < 1e-3 and same["subset_size"] == 40
    assert different["kid_mean"] > 10 * max(similar["kid_mean"], 1e-4)
    assert dm.kernel_inception_distance(extractor, real, noise[:5], subsets=20, seed=0)["subset_size"] == 5
    assert dm.kernel_inception_distance(extractor, real, noise, subsets=20, seed=4) == dm.kernel_inception_distance(
        extractor, real, noise, subsets=20, seed=4
    )
    with pytest.raises(ValueError, match="at least 2"):
        dm.kernel_inception_distance(extractor, real, noise[:1])


def test_diversity_is_zero_for_copies_and_grows_with_variety():
    torch.manual_seed(0)
    extractor = dm.FeatureExtractor(dm.CropClassifier())
    copies = _blobs(1, 1).repeat(20, 1, 1, 1)
    varied = _blobs(20, 1)
    noise = torch.rand(20, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    assert dm.feature_diversity(extractor(copies)) == pytest.approx(0.0, abs=1e-5)
    assert dm.ssim_diversity(copies) == pytest.approx(0.0, abs=1e-5)
    assert dm.feature_diversity(extractor(varied)) > 0.01
    assert 0.0 < dm.ssim_diversity(varied) < dm.ssim_diversity(noise)
    with pytest.raises(ValueError, match="at least 2"):
        dm.ssim_diversity(copies[:1])

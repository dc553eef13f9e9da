import math

import pytest
import torch

from twinray.shared.evaluation.metrics import per_image_class_dice, residual_localisation, summarise_dice


def test_dice_values_and_absent_classes():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2, :2] = 1  # 4 pixels of class 1; class 2 absent
    pred = torch.zeros(1, 4, 4, dtype=torch.long)
    pred[0, :2, :1] = 1  # 2 of them
    dice = per_image_class_dice(pred, target, num_classes=3)
    assert math.isclose(float(dice[0, 0]), 2 * 2 / (2 + 4), rel_tol=1e-6)
    assert math.isnan(float(dice[0, 1]))
    summary = summarise_dice(dice, ("background", "a", "b"))
    assert math.isclose(summary["mean_dice"], 2 / 3, rel_tol=1e-6)
    assert set(summary["per_class"]) == {"a", "b"}


def test_twin_similarity_separates_inside_and_outside_the_lesion():
    from twinray.shared.evaluation.metrics import twin_similarity

    true_twin = torch.rand(2, 1, 48, 48)
    lesion = torch.zeros(2, 48, 48, dtype=torch.bool)
    lesion[:, 10:20, 10:20] = True
    changed = true_twin.clone()
    changed[:, :, 10:20, 10:20] = (changed[:, :, 10:20, 10:20] + 0.3).clamp(0, 1)
    perfect, off = twin_similarity(true_twin, true_twin, lesion), twin_similarity(changed, true_twin, lesion)
    assert perfect["ssim"] > 0.999 and off["ssim"] < perfect["ssim"]
    assert off["psnr"] < 40 and off["psnr_outside_lesion"] >= 99  # untouched outside the lesion


def test_residual_localisation_counts_energy_inside_the_mask():
    image = torch.zeros(2, 1, 4, 4)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, :2, :2] = True
    twin = image.clone()
    twin[0, 0, :2, :2] = -1.0  # all of image 0's change inside its lesion
    twin[1, 0, :2, :2] = -1.0
    twin[1, 0, 2:, 2:] = -1.0  # half of image 1's change outside
    scores = residual_localisation(image, twin, mask)
    assert scores["residual_in_lesion"] == pytest.approx(0.75)
    assert 0.5 < scores["residual_auroc"] < 1.0

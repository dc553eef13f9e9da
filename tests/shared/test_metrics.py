import math

import torch

from shared.metrics import per_image_class_dice, summarise_dice


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

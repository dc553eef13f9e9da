import numpy as np
import torch

from twinray.shared.evaluation.residual_boxes import choose_on_val, residual_boxes


def residual_with(*squares: tuple[int, int, int, float]) -> np.ndarray:
    """One 64 x 64 residual holding (row, col, side, value) squares."""
    image = np.zeros((64, 64), np.float32)
    for row, col, side, value in squares:
        image[row : row + side, col : col + side] = value
    return image[None]


def test_each_large_region_becomes_a_box_scored_by_its_peak():
    # A strong negative square (a removed density counts too) and a speck that smoothing fades below threshold.
    residual = residual_with((10, 20, 12, -0.4), (50, 50, 1, 0.05))
    [(boxes, scores)] = residual_boxes(residual, threshold=0.05, min_pixels=4)
    assert boxes.shape == (1, 4)
    x1, y1, x2, y2 = boxes[0].tolist()
    assert abs(x1 - 20) <= 3 and abs(y1 - 10) <= 3 and abs(x2 - 32) <= 3 and abs(y2 - 22) <= 3
    assert 0.3 < float(scores[0]) <= 0.4


def test_small_regions_are_dropped_and_an_empty_residual_gives_no_box():
    residual = np.concatenate([residual_with((30, 30, 3, 0.5)), np.zeros((1, 64, 64), np.float32)])
    found = residual_boxes(residual, threshold=0.01, min_pixels=400)
    assert [len(boxes) for boxes, _ in found] == [0, 0]


def test_the_val_choice_finds_the_setting_that_boxes_the_lesion():
    residual = residual_with((10, 20, 16, 0.3), (40, 40, 2, 0.02))
    truth = [torch.tensor([[20.0, 10.0, 36.0, 26.0]])]
    chosen = choose_on_val(residual, truth)
    assert chosen["val_rsna_score"] > 0.6
    assert chosen["threshold"] > 0.02  # the faint speck is not boxed

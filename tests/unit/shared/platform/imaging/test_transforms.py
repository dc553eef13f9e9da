"""Resizing into the model and back: shapes, value ranges, antialiasing, label maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from twinray.shared.platform.imaging import labels_to_size, logits_to_labels, logits_to_size, to_model_input


def test_model_input_is_1x1xSxS_float32_in_unit_range() -> None:
    image = np.random.default_rng(0).random((300, 200), dtype=np.float32)
    tensor = to_model_input(image, 64)
    assert tensor.shape == (1, 1, 64, 64) and tensor.dtype == torch.float32
    assert tensor.min() >= 0 and tensor.max() <= 1


def test_model_input_downsampling_is_antialiased() -> None:
    checkerboard = (np.indices((512, 512)).sum(axis=0) % 2).astype(np.float32)
    tensor = to_model_input(checkerboard, 64)
    torch.testing.assert_close(tensor, torch.full_like(tensor, 0.5), atol=0.02, rtol=0)


def test_model_input_rejects_non_2d() -> None:
    with pytest.raises(ValueError, match="H x W"):
        to_model_input(np.zeros((1, 32, 32), dtype=np.float32), 16)


def test_labels_to_size_repeats_labels_on_integer_ratios() -> None:
    labels = np.arange(16, dtype=np.uint8).reshape(4, 4)
    np.testing.assert_array_equal(labels_to_size(labels, 8, 12), np.kron(labels, np.ones((2, 3), np.uint8)))


def test_labels_to_size_matches_torch_nearest_exact_and_keeps_dtype() -> None:
    labels = torch.randint(0, 7, (1, 1, 5, 7))
    resized = labels_to_size(labels, 13, 11)
    expected = F.interpolate(labels.float(), size=(13, 11), mode="nearest-exact")[0, 0].long().numpy()
    assert resized.dtype == np.int64
    np.testing.assert_array_equal(resized, expected)


def test_labels_to_size_rejects_float_maps() -> None:
    with pytest.raises(ValueError, match="integer"):
        labels_to_size(np.zeros((4, 4), dtype=np.float32), 8, 8)


def test_logits_to_size_shapes() -> None:
    assert logits_to_size(torch.randn(2, 3, 16, 16), 40, 30).shape == (2, 3, 40, 30)
    assert logits_to_size(torch.randn(3, 16, 16), 40, 30).shape == (3, 40, 30)


def test_logits_to_labels_beats_nearest_on_labels_for_a_smooth_boundary() -> None:
    def disc(size: int) -> torch.Tensor:
        centres = (torch.arange(size) + 0.5) / size * 2 - 1  # pixel centres, as align_corners=False
        y, x = torch.meshgrid(centres, centres, indexing="ij")
        return 0.6 - torch.sqrt(x**2 + y**2)  # > 0 inside a disc of radius 0.6

    truth = (disc(512) > 0).numpy()
    logits = torch.stack([torch.zeros(32, 32), 20 * disc(32)])  # class 1 inside the disc
    from_logits = logits_to_labels(logits[None], 512, 512)
    from_labels = labels_to_size(logits.argmax(dim=0), 512, 512)
    assert from_logits.dtype == np.uint8 and from_logits.shape == (512, 512)
    assert (from_logits != truth).sum() < 0.1 * (from_labels != truth).sum()

"""The one yardstick for healthy twins scores what it claims: doing nothing, a perfect twin and a
change spread over the whole image each land where they must."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from twinray.shared.data.phantoms.dataset import read_phantom_split
from twinray.shared.evaluation.twin import evaluate_twin_function
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig
from twinray.shared.platform.imaging import unit_images
from twinray.shared.platform.storage import open_store


@pytest.fixture(scope="module")
def val(twinray_settings, phantom_dataset):
    return read_phantom_split(open_store(twinray_settings), phantom_dataset, "val")


def _oracle(arrays):
    """Returns each image's TRUE twin (looked up by its pixels)."""
    images, twins = unit_images(arrays.image), unit_images(arrays.twin)

    def twin_fn(batch: torch.Tensor) -> torch.Tensor:
        rows = [int(torch.nonzero((images == one).flatten(1).all(dim=1))[0]) for one in batch]
        return twins[rows]

    return twin_fn


def test_doing_nothing_finds_nothing(val):
    scores = evaluate_twin_function(lambda x: x, val)
    assert scores["residual_in_lesion"] == 0.0 and scores["identity_change"] == 0.0
    assert scores["l1_to_twin"] == pytest.approx(scores["l1_input_to_twin"])
    assert scores["l1_input_to_twin"] > 0  # the split does hold lesions


def test_the_true_twin_scores_perfectly(val):
    segmenter = AnatomySegmenter(SegmenterConfig(input_size=64, channels=(4, 8))).eval()
    scores = evaluate_twin_function(_oracle(val), val, segmenter=segmenter)
    assert scores["residual_in_lesion"] == pytest.approx(1.0)
    assert scores["residual_auroc"] > 0.95
    assert scores["l1_to_twin"] == 0.0 and scores["identity_change"] == 0.0
    assert scores["ssim"] == pytest.approx(1.0) and scores["ssim_outside_lesion"] == pytest.approx(1.0)
    assert scores["anatomy_dice"] == pytest.approx(1.0)


def test_a_change_everywhere_is_not_localised(val):
    noise = torch.Generator().manual_seed(0)
    scores = evaluate_twin_function(lambda x: (x + 0.05 * torch.randn(x.shape, generator=noise)).clamp(0, 1), val)
    lesion_fraction = float(np.mean([m.mean() for m, s in zip(val.lesion_mask, val.lesion_seed) if s >= 0]))
    assert scores["residual_in_lesion"] < 3 * lesion_fraction
    assert scores["identity_change"] > 0.02
    assert scores["residual_auroc"] < 0.6


def test_needs_both_kinds_of_image(val):
    abnormal_only = dataclasses.replace(val, lesion_seed=np.zeros_like(val.lesion_seed))
    with pytest.raises(ValueError, match="both abnormal and normal"):
        evaluate_twin_function(lambda x: x, abnormal_only)

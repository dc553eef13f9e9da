"""Each normal-synthesis loss on hand-made tensors: zero exactly when it should be, and the anatomy
consistency loss preferring the right anatomy map with a real (tiny) segmenter."""

from __future__ import annotations

import pytest
import torch

from twinray.shared.data.anatomy import NUM_ANATOMY_CLASSES
from twinray.shared.models.components import gan_losses as losses
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig


def test_reconstruction_is_the_l1_to_the_pseudo_normal():
    twin = torch.full((2, 1, 8, 8), 0.5)
    assert losses.reconstruction_loss(twin, twin.clone()) == 0
    assert losses.reconstruction_loss(twin, twin - 0.25) == pytest.approx(0.25)


def test_identity_is_zero_only_for_an_unchanged_normal():
    normal = torch.rand(2, 1, 8, 8)
    assert losses.identity_loss(normal.clone(), normal) == 0
    darker = normal.clone()
    darker[..., :4, :] -= 0.1  # half the image changed by 0.1
    assert losses.identity_loss(darker, normal) == pytest.approx(0.05)


def test_lsgan_targets_one_for_real_and_zero_for_twins():
    ones, zeros = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    assert losses.lsgan_discriminator_loss(ones, zeros) == 0  # a perfect discriminator
    assert losses.lsgan_discriminator_loss(zeros, ones) == pytest.approx(1.0)  # fully fooled
    assert losses.lsgan_generator_loss(ones) == 0  # twins judged real
    assert losses.lsgan_generator_loss(zeros) == pytest.approx(1.0)


def test_anatomy_consistency_prefers_the_right_map_and_only_moves_the_twin():
    torch.manual_seed(0)
    segmenter = AnatomySegmenter(SegmenterConfig(input_size=32, channels=(4, 8))).eval().requires_grad_(False)
    twin = torch.rand(2, 1, 64, 64, requires_grad=True)  # resized to the segmenter's 32 px inside
    with torch.no_grad():
        right = segmenter(torch.nn.functional.interpolate(twin, size=(32, 32), mode="bilinear")).argmax(dim=1)
    wrong = (right + 1) % NUM_ANATOMY_CLASSES
    loss = losses.anatomy_consistency_loss(segmenter, twin, right)
    assert loss < losses.anatomy_consistency_loss(segmenter, twin, wrong)
    loss.backward()
    assert twin.grad is not None and twin.grad.abs().sum() > 0
    assert all(p.grad is None for p in segmenter.parameters())

"""Each normal-synthesis loss on hand-made tensors: zero exactly when it should be, and the anatomy
consistency loss preferring the right anatomy map with a real (tiny) segmenter."""

from __future__ import annotations

import pytest
import torch

from twinray.shared.data.anatomy import NUM_ANATOMY_CLASSES
from twinray.shared.models.components import gan_losses as losses
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig


def test_changed_and_kept_pixels_weigh_the_same():
    source = torch.full((1, 1, 10, 10), 0.5)
    target = source.clone()
    target[..., 0, :2] = 0.3  # the pair changes 2 of 100 pixels
    assert losses.change_balanced_error(target.clone(), target, source) == 0
    # changing nothing misses the 2 changed pixels by 0.2 each: their mean squared error alone
    assert losses.change_balanced_error(source.clone(), target, source) == pytest.approx(0.04)
    # the same squared error spread over kept pixels instead costs as much per pixel share
    wrong = target.clone()
    wrong[..., 5:, :] -= 0.2  # 50 of the 98 kept pixels
    assert losses.change_balanced_error(wrong, target, source) == pytest.approx(0.04 * 50 / 98)


def test_a_healthy_twin_is_scored_by_its_mean_squared_change():
    normal = torch.rand(2, 1, 8, 8)
    assert losses.change_balanced_error(normal.clone(), normal, normal) == 0
    darker = normal.clone()
    darker[..., :4, :] -= 0.1  # half the image changed by 0.1
    assert losses.change_balanced_error(darker, normal, normal) == pytest.approx(0.005)


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

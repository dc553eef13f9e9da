"""mask_blend's blending keeps the mask exact and carries the real defect's appearance over."""

from __future__ import annotations

import numpy as np
import pytest

from twinray.shared.platform.errors import InvalidInput
from twinray.shared.synthesis.blending import blend_defect, defect_appearance


def _surface(seed: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    return (0.5 + 0.1 * np.sin(6 * x + seed) * np.cos(4 * y) + 0.02 * rng.standard_normal((size, size))).astype(np.float32)


def _disc(centre: tuple[int, int], radius: float, size: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    return (y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= radius**2


@pytest.fixture
def dark_hole():
    mask = _disc((20, 24), 6)
    image = _surface(0).copy()
    image[mask] -= 0.3  # a real defect: 0.3 darker than its surface
    return defect_appearance(image, mask)


def test_appearance_is_the_change_the_real_defect_made(dark_hole):
    assert dark_hole.residual[dark_hole.mask].mean() == pytest.approx(-0.3, abs=0.03)
    assert np.all(dark_hole.residual[~dark_hole.mask] == 0)


def test_blended_defect_changes_exactly_the_mask_and_looks_like_the_real_one(dark_hole):
    normal, target = _surface(1), _disc((40, 36), 8) & ~_disc((40, 36), 2)  # a ring: another shape
    out = blend_defect(normal, target, dark_hole, feather_px=2.0)
    assert out.dtype == np.float32 and out.shape == normal.shape
    np.testing.assert_array_equal(out[~target], normal[~target])
    change = out - normal
    assert change[target].mean() < -0.15  # darker inside, as the real defect is
    deep = target & (np.abs(change) > 0)
    assert deep.sum() > 0.8 * target.sum()


def test_feathering_fades_the_change_towards_the_mask_boundary(dark_hole):
    normal, target = _surface(2), _disc((32, 32), 10)
    out = blend_defect(normal, target, dark_hole, feather_px=4.0)
    change = np.abs(out - normal)
    edge = target & ~_disc((32, 32), 8.5)
    core = _disc((32, 32), 5)
    assert change[edge].mean() < 0.6 * change[core].mean()
    hard = np.abs(blend_defect(normal, target, dark_hole, feather_px=0.0) - normal)
    assert hard[edge].mean() > change[edge].mean()


@pytest.mark.parametrize(
    ("mask", "message"),
    [(np.zeros((64, 64), bool), "empty"), (np.ones((32, 32), bool), "32x32 but the image is 64x64")],
)
def test_bad_masks_are_refused_with_a_precise_message(dark_hole, mask, message):
    with pytest.raises(InvalidInput, match=message):
        blend_defect(_surface(3), mask, dark_hole)


def test_negative_feather_is_refused(dark_hole):
    with pytest.raises(InvalidInput, match="feather_px"):
        blend_defect(_surface(3), _disc((32, 32), 5), dark_hole, feather_px=-1)


def test_appearance_keeps_its_contrast_on_a_thin_mask_of_another_shape(dark_hole):
    """Pixel by pixel: a one-pixel-wide scratch mask gets the hole's full darkness, not a resized blur."""
    normal, target = _surface(4), np.zeros((64, 64), bool)
    target[10:40, 30] = True
    change = blend_defect(normal, target, dark_hole) - normal
    assert change[target].mean() == pytest.approx(-0.3, abs=0.05)
    np.testing.assert_array_equal(change[~target], 0)

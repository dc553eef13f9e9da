"""Real-like defects: the mask is exactly the changed pixels, never empty, of sensible size."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from twinray.shared.data.products import CATEGORIES, DEFECT_KINDS, MIN_CHANGE, render_defect, render_surface
from twinray.shared.data.products.defects import MAX_AREA_FRACTION, MIN_AREA_PIXELS
from twinray.shared.platform.errors import InvalidInput

SEEDS = range(4)
SQUARE = np.ones((3, 3), bool)


@pytest.fixture(scope="module")
def surfaces() -> dict[str, np.ndarray]:
    return {category: render_surface(category, 64, 5) for category in CATEGORIES}


@pytest.mark.parametrize("kind", DEFECT_KINDS)
@pytest.mark.parametrize("category", CATEGORIES)
def test_mask_is_exactly_the_changed_pixels(surfaces: dict[str, np.ndarray], category: str, kind: str) -> None:
    surface = surfaces[category]
    for seed in SEEDS:
        image, mask = render_defect(surface, kind, seed)
        assert image.dtype == np.float32 and image.shape == surface.shape
        assert mask.dtype == bool and mask.shape == surface.shape
        assert image.min() >= 0.0 and image.max() <= 1.0
        np.testing.assert_array_equal(image[~mask], surface[~mask])  # untouched outside, bit for bit
        assert (np.abs(image[mask] - surface[mask]) >= MIN_CHANGE * (1 - 1e-6)).all()  # visibly changed inside
        assert MIN_AREA_PIXELS <= mask.sum() <= MAX_AREA_FRACTION * mask.size


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_deterministic_by_seed_and_varied_across_seeds(surfaces: dict[str, np.ndarray], kind: str) -> None:
    surface = surfaces["plastic"]
    image, mask = render_defect(surface, kind, 11)
    again, again_mask = render_defect(surface, kind, 11)
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(mask, again_mask)
    other_masks = [render_defect(surface, kind, seed)[1] for seed in (12, 13)]
    assert all(not np.array_equal(mask, other) for other in other_masks)


def test_surface_is_not_modified(surfaces: dict[str, np.ndarray]) -> None:
    surface = surfaces["brick"]
    before = surface.copy()
    for kind in DEFECT_KINDS:
        render_defect(surface, kind, 1)
    np.testing.assert_array_equal(surface, before)


def test_appearance_follows_the_physics(surfaces: dict[str, np.ndarray]) -> None:
    """Cracks and holes darken what they cover; a hole's core is near black."""
    surface = surfaces["plastic"]
    for seed in SEEDS:
        image, mask = render_defect(surface, "crack", seed)
        assert (image[mask] < surface[mask]).all()
        image, mask = render_defect(surface, "hole", seed)
        assert image[mask].min() < 0.15 and (image[mask] < surface[mask]).mean() > 0.9


def test_lines_are_thin_and_stains_are_blobs() -> None:
    """Three 3x3 erosions wipe out a scratch or crack (a few pixels wide) but not a stain."""
    surface = render_surface("plastic", 128, 9)
    for seed in SEEDS:
        for kind in ("scratch", "crack"):
            assert not ndimage.binary_erosion(render_defect(surface, kind, seed)[1], SQUARE, iterations=3).any(), (kind, seed)
        assert ndimage.binary_erosion(render_defect(surface, "stain", seed)[1], SQUARE, iterations=3).any(), seed


def test_larger_images_get_larger_defects() -> None:
    small = render_surface("metal", 64, 2)
    large = render_surface("metal", 128, 2)
    for kind in ("hole", "stain"):
        assert render_defect(large, kind, 4)[1].sum() > 2 * render_defect(small, kind, 4)[1].sum()


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_every_kind_fits_the_smallest_and_a_large_size(kind: str) -> None:
    for size in (32, 192):
        surface = render_surface("gravel", size, 1)
        for seed in range(3):
            image, mask = render_defect(surface, kind, seed)
            np.testing.assert_array_equal(image[~mask], surface[~mask])
            assert MIN_AREA_PIXELS <= mask.sum() <= MAX_AREA_FRACTION * mask.size


def test_flat_black_surface_cannot_take_a_dark_defect() -> None:
    with pytest.raises(InvalidInput, match="could not place a crack defect"):
        render_defect(np.zeros((64, 64), np.float32), "crack", 0)


@pytest.mark.parametrize(
    ("surface", "kind", "seed", "message"),
    [
        (np.full((64, 64), 0.5, np.float32), "dent", 0, "unknown defect kind 'dent'"),
        (np.full((64, 48), 0.5, np.float32), "hole", 0, "square"),
        (np.full((16, 16), 0.5, np.float32), "hole", 0, "side >= 32"),
        (np.full((64, 64), 2.0, np.float32), "hole", 0, r"finite floats in \[0, 1\]"),
        (np.full((64, 64), 128, np.uint8), "hole", 0, "finite floats"),
        (np.full((64, 64), 0.5, np.float32), "hole", -3, "seed must be an integer >= 0"),
    ],
)
def test_bad_requests_are_invalid_input(surface: np.ndarray, kind: str, seed: int, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        render_defect(surface, kind, seed)

"""The blending of `mask_blend` (approach A of the original work): draw a defect inside a sampled mask
on a normal image, with the appearance of one of the few REAL defects, so the synthetic image comes
with an exact mask.

A real defect's appearance is its residual: the defect image minus the surface that would be there
without it (scikit-image's biharmonic inpainting of the defect region from its surroundings). The
residual is carried over pixel by pixel, never interpolated: both masks are centred on their
centroids and scaled by their spread, and every target pixel takes the residual of the nearest
real-defect pixel in those coordinates. So a thin crack's darkness fills a blob and a stain's
brightness a scratch, at full contrast: resizing the residual instead washes thin defects out, and
scaling by the spread maps a long target's ends to the real defect's ends, not all to its faint rim
(docs/decisions/0204-appearance-pixel-by-pixel.md). The residual is optionally faded to zero over
`feather_px` pixels inside the mask boundary and added: Poisson (seamless) cloning of a change that
is zero on the boundary reduces to adding it, so this is seamless blending without the 8-bit round
trip of OpenCV's `seamlessClone`. Every pixel outside the mask stays exactly as it was. The default is no feathering: the real defects have sharp edges where they are sharp,
and a fade over thin masks would draw defects the mask claims but the eye cannot see.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.restoration import inpaint_biharmonic

from twinray.shared.platform.errors import InvalidInput

MARGIN_PX = 4  # surface context kept around a real defect for the inpainting


@dataclasses.dataclass(frozen=True)
class DefectAppearance:
    """A real defect's change to its surface, cropped to its mask's bounding box (plus margin)."""

    residual: np.ndarray  # float32 (h, w), zero outside `mask`
    mask: np.ndarray  # bool (h, w)


def _checked_mask(mask: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise InvalidInput(f"{what} is {mask.shape[1]}x{mask.shape[0]} but the image is {shape[1]}x{shape[0]}")
    if not mask.any():
        raise InvalidInput(f"{what} is empty: a defect needs at least one pixel")
    return mask


def _bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    height, width = mask.shape
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, height)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, width)),
    )


def defect_appearance(image: np.ndarray, mask: np.ndarray) -> DefectAppearance:
    """The appearance of one real defect: `image` (H,W) in [0,1] minus its inpainted surface, inside `mask`."""
    image = np.asarray(image, dtype=np.float64)
    mask = _checked_mask(mask, image.shape, "defect mask")
    box = _bounding_box(mask, MARGIN_PX)
    crop, crop_mask = image[box], mask[box]
    surface = inpaint_biharmonic(crop, crop_mask)
    return DefectAppearance(residual=((crop - surface) * crop_mask).astype(np.float32), mask=crop_mask)


def _normalised(mask: np.ndarray) -> np.ndarray:
    """(n, 2) row/column offsets of the mask's pixels from their centroid, in units of their spread."""
    points = np.argwhere(mask).astype(np.float64)
    offsets = points - points.mean(axis=0)
    return offsets / np.maximum(offsets.std(axis=0), 0.5)


def transferred_residual(appearance: DefectAppearance, target: np.ndarray) -> np.ndarray:
    """The appearance's residual on `target` (bool (h,w)): each target pixel takes the residual of the
    real-defect pixel nearest to it when both masks are centred on their centroids and scaled by
    their spread (standard deviation per axis)."""
    source_points = np.argwhere(appearance.mask)
    _, nearest = cKDTree(_normalised(appearance.mask)).query(_normalised(target))
    out = np.zeros(target.shape, np.float32)
    out[target] = appearance.residual[source_points[nearest, 0], source_points[nearest, 1]]
    return out


def blend_defect(normal: np.ndarray, mask: np.ndarray, appearance: DefectAppearance, *, feather_px: float = 0.0) -> np.ndarray:
    """`normal` (H,W) in [0,1] with `appearance` drawn inside `mask`; equal to `normal` outside it."""
    normal = np.asarray(normal, dtype=np.float32)
    mask = _checked_mask(mask, normal.shape, "target mask")
    if feather_px < 0:
        raise InvalidInput(f"feather_px must be >= 0, got {feather_px}")
    box = _bounding_box(mask)
    target = mask[box]
    residual = transferred_residual(appearance, target)
    inside = ndimage.distance_transform_edt(np.pad(target, 1))[1:-1, 1:-1]  # 1 at the boundary pixels
    fade = np.clip(inside / feather_px, 0.0, 1.0) if feather_px > 0 else np.ones_like(inside)
    out = normal.copy()
    out[box] = np.where(target, np.clip(normal[box] + fade * residual, 0.0, 1.0), normal[box])
    return out

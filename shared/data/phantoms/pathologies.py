"""The four pathologies of `cxr-phantom/2`, each with its own physics, drawn as a change of projected
density on a person's healthy canvas (twinray.shared.data.phantoms.canvas).

- opacity: consolidation, added density with a blobby plateau (RSNA's "lung opacity" boxes);
- nodule: a round, sharp-edged added density, from a few millimetres (nodule) to a mass;
- effusion: dependent fluid at the lung base, densest at the bottom, with a meniscus that climbs the
  chest wall, blunting the costophrenic angle and hiding the diaphragm when large;
- pneumothorax: density LOSS, air between the chest wall and a thin bright visceral pleural line,
  where the lung markings vanish. A twin must ADD structure back there.

Sizes, positions and counts come from `twinray.shared.data.phantoms.calibration` (fitted on real
annotation tables). Every function returns the density change (0 where the pathology is absent) or
None when this person has no room for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from twinray.shared.data.phantoms.calibration import FIT, Quantiles
from twinray.shared.data.phantoms.canvas import Canvas
from twinray.shared.data.phantoms.cxr import smooth_field

PATHOLOGIES: tuple[str, ...] = ("opacity", "nodule", "effusion", "pneumothorax")
OPACITY, NODULE, EFFUSION, PNEUMOTHORAX = range(len(PATHOLOGIES))

Drawer = Callable[[np.random.Generator, Canvas, float], "np.ndarray | None"]


def _centre_in_lung(
    rng: np.random.Generator, canvas: Canvas, fx: Quantiles, fy: Quantiles, side: int, margin: float
) -> tuple[float, float] | None:
    """An image-coordinate point drawn from the fitted centre distributions whose `margin`
    neighbourhood lies in lung field `side`; when 64 draws find none, any pixel of that lung field
    (None only when the field is empty, e.g. collimated away)."""
    inside = canvas.lung_field[..., side]
    for _ in range(64):
        px = fx.draw(rng) if side == 0 else 1.0 - fx.draw(rng)  # fitted on the right lung, mirrored
        cx, cy = 2.0 * px - 1.0, 2.0 * fy.draw(rng) - 1.0
        probes = [(cx + dx * margin, cy + dy * margin) for dx, dy in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))]
        if all(inside[_index(canvas, py), _index(canvas, qx)] for qx, py in probes):
            return cx, cy
    rows, cols = np.nonzero(inside)
    if len(rows) == 0:
        return None
    pick = int(rng.integers(len(rows)))
    return float(canvas.c[cols[pick]]), float(canvas.c[rows[pick]])


def _index(canvas: Canvas, coordinate: float) -> int:
    return int(np.clip((coordinate + 1.0) / canvas.pixel, 0, canvas.size - 1))


def opacity(rng: np.random.Generator, canvas: Canvas, contrast: float) -> np.ndarray | None:
    """A consolidation filling roughly a fitted RSNA box: Gaussian lobes, a capped plateau, a
    texture, cut at a threshold so its support is compact; confined to one lung field."""
    side = int(rng.random() < FIT.opacity_left_share)
    width, height = FIT.opacity_width.draw(rng) * 2.0, FIT.opacity_height.draw(rng) * 2.0
    centre = _centre_in_lung(rng, canvas, FIT.opacity_centre_x, FIT.opacity_centre_y, side, 0.15 * min(width, height))
    if centre is None:
        return None
    k = int(rng.integers(3, 7))
    offsets = np.vstack([np.zeros(2), rng.uniform(-0.3, 0.3, size=(k - 1, 2)) * (width, height)])
    sigmas = rng.uniform(0.18, 0.3, size=(k, 2)) * (width, height)
    weights = np.concatenate([[1.0], rng.uniform(0.5, 0.9, size=k - 1)])
    c = canvas.c
    cx, cy = centre[0] + offsets[:, 0], centre[1] + offsets[:, 1]
    ex = np.exp(-0.5 * np.square((c[None, :] - cx[:, None]) / sigmas[:, 0, None]))
    ey = weights[:, None] * np.exp(-0.5 * np.square((c[None, :] - cy[:, None]) / sigmas[:, 1, None]))
    field = (ey.T @ ex).astype(np.float32)
    field = np.minimum(field / max(float(field.max()), 1e-6), 1.0)
    texture = smooth_field(rng.standard_normal((16, 16)), c, c, 0.04)
    field = field * (1.0 + 0.4 * np.tanh(texture))
    threshold = float(rng.uniform(0.25, 0.4))
    ramp = np.clip((field - threshold) / (1.0 - threshold), 0.0, None)
    return contrast * np.sqrt(ramp) * canvas.lung_field[..., side]


def nodule(rng: np.random.Generator, canvas: Canvas, contrast: float) -> np.ndarray | None:
    """A projected sphere with a lobulated, sharp edge; a mass when the fitted diameter is large."""
    side = int(rng.random() < 0.5)
    size = FIT.mass_diameter if rng.random() < FIT.mass_share else FIT.nodule_diameter
    radius = size.draw(rng)  # a diameter as a fraction of the image is a radius in image coordinates
    centre = _centre_in_lung(rng, canvas, FIT.nodule_centre_x, FIT.nodule_centre_y, side, 1.2 * radius)
    if centre is None:
        return None
    dx, dy = canvas.c[None, :] - centre[0], canvas.c[:, None] - centre[1]
    angle = np.arctan2(dy, dx)
    lobes = int(rng.integers(3, 7))
    edge = radius * (1.0 + 0.12 * rng.uniform(0, 1) * np.sin(lobes * angle + rng.uniform(0, 2 * math.pi)))
    r2 = (np.square(dx) + np.square(dy)) / np.square(edge)
    return (contrast * np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))).astype(np.float32) * canvas.any_lung()


def effusion(rng: np.random.Generator, canvas: Canvas, contrast: float) -> np.ndarray | None:
    """Fluid filling one lung field from its lowest point up to a meniscus that rises laterally."""
    side = int(rng.random() < 0.5)
    field = canvas.lung_field[..., side]
    rows, cols = np.nonzero(field)
    if len(rows) == 0:
        return None
    top, bottom = canvas.c[rows.min()], canvas.c[rows.max()]
    level = bottom - FIT.effusion_height.draw(rng) * (bottom - top)
    medial, lateral = (canvas.c[cols.max()], canvas.c[cols.min()]) if side == 0 else (canvas.c[cols.min()], canvas.c[cols.max()])
    t = np.clip((canvas.c - medial) / (lateral - medial), 0.0, 1.0)  # 0 at the mediastinum, 1 at the chest wall
    surface = level - float(rng.uniform(0.04, 0.12)) * np.square(t)  # the meniscus
    depth = canvas.c[:, None] - surface[None, :]
    thickness = np.clip(depth / float(rng.uniform(0.05, 0.15)), 0.0, 1.0)
    return (contrast * np.sqrt(thickness)).astype(np.float32) * field


def pneumothorax(rng: np.random.Generator, canvas: Canvas, contrast: float) -> np.ndarray | None:
    """Air between the chest wall and the visceral pleura, from the apex down: the markings vanish
    and the density drops there; the pleural line is a thin bright curve."""
    side = int(rng.random() < FIT.pneumothorax_left_share)
    field = canvas.lung_field[..., side]
    rows = np.flatnonzero(field.any(axis=1))
    if len(rows) == 0:
        return None
    apex, base = canvas.c[rows.min()], canvas.c[rows.max()]
    end = apex + FIT.pneumothorax_extent.draw(rng) * (base - apex)
    gap = FIT.pneumothorax_gap.draw(rng) * 2.0
    taper = np.sqrt(np.clip((end - canvas.c) / (0.3 * (end - apex)), 0.0, 1.0))[:, None]
    depth = canvas.wall[..., side] + gap * taper  # < 0 inside the collapsed lung, > 0 in the gap
    air = field & (depth > 0) & (taper > 0)
    change = np.where(air, -(canvas.markings + contrast), 0.0)
    width = 0.4 * canvas.pixel  # the pleura is under a millimetre thick: about one pixel wide
    line = np.exp(-0.5 * np.square(depth / width)) * ((np.abs(depth) < 1.5 * width) & field & (taper > 0))
    return (change + 0.25 * line).astype(np.float32)


DRAWERS: dict[int, Drawer] = {OPACITY: opacity, NODULE: nodule, EFFUSION: effusion, PNEUMOTHORAX: pneumothorax}

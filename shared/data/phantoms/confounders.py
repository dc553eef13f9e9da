"""What makes real films hard and is NOT disease: drawn identically in a `cxr-phantom/2` image and its
twin, so a model must learn to leave it alone.

Density added to the healthy person (before exposure): support devices (ECG electrodes with their
leads, a central venous line, a nasogastric tube, an endotracheal tube: bright, thin, often inside the
lung fields), nipple shadows (nodule mimics), breast soft tissue, scapulae over the lateral lungs on
AP films, and a patchy person-to-person variation of lung density. After exposure: scatter (a veil
that lowers contrast), collimation (unexposed, bright borders) and a burned-in side marker.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from twinray.shared.data.phantoms.canvas import Canvas
from twinray.shared.data.phantoms.cxr import PersonParameters, smooth_field, to_image

# A 5x7 bitmap of the side markers' letters, as burned in by the X-ray unit.
_LETTERS = {
    "L": ("10000", "10000", "10000", "10000", "10000", "10000", "11111"),
    "R": ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
}


def _tube(canvas: Canvas, points: np.ndarray, radius: float) -> np.ndarray:
    """Projected density profile (0..1) of a tube of `radius` along a polyline of image points."""
    pad = radius * 2.5
    x0, y0 = points.min(axis=0) - pad
    x1, y1 = points.max(axis=0) + pad
    c = canvas.c
    cols, rows = np.flatnonzero((c >= x0) & (c <= x1)), np.flatnonzero((c >= y0) & (c <= y1))
    out = np.zeros((canvas.size, canvas.size), np.float32)
    if len(cols) == 0 or len(rows) == 0:
        return out
    px, py = c[cols][None, :, None], c[rows][:, None, None]
    a, b = points[:-1], points[1:]
    d = b - a
    t = np.clip(((px - a[:, 0]) * d[:, 0] + (py - a[:, 1]) * d[:, 1]) / np.maximum((d * d).sum(axis=1), 1e-12), 0.0, 1.0)
    distance = np.sqrt(np.square(px - a[:, 0] - t * d[:, 0]) + np.square(py - a[:, 1] - t * d[:, 1])).min(axis=2)
    out[np.ix_(rows, cols)] = np.sqrt(np.clip(1.0 - np.square(distance / radius), 0.0, 1.0))
    return out


def _curve(rng: np.random.Generator, start: tuple[float, float], end: tuple[float, float], bend: float) -> np.ndarray:
    """A smooth quadratic Bezier polyline from `start` to `end`, bent sideways by up to `bend`."""
    start_, end_ = np.asarray(start), np.asarray(end)
    normal = np.array([-(end_ - start_)[1], (end_ - start_)[0]])
    control = (start_ + end_) / 2 + normal / max(np.linalg.norm(normal), 1e-9) * rng.uniform(-bend, bend)
    t = np.linspace(0.0, 1.0, 24)[:, None]
    return (1 - t) ** 2 * start_ + 2 * (1 - t) * t * control + t**2 * end_


def devices(rng: np.random.Generator, canvas: Canvas, view: str) -> np.ndarray:
    """Support devices, more often on AP (bedside) films: returns their added density."""
    p, out = canvas.params, np.zeros((canvas.size, canvas.size), np.float32)
    thin = max(canvas.pixel, 0.006)
    if rng.random() < (0.55 if view == "AP" else 0.12):  # ECG electrodes with leads running off the film
        for _ in range(int(rng.integers(1, 5))):
            centre = (float(rng.uniform(-0.7, 0.7)), float(rng.uniform(-0.8, 0.2)))
            disc = _tube(canvas, np.array([centre, centre]), 0.035)
            out += 0.25 * disc + 0.9 * _tube(canvas, np.array([centre, centre]), 0.012)
            edge = (float(rng.choice([-1.05, 1.05])), float(rng.uniform(-1.0, 1.0)))
            out += 0.7 * _tube(canvas, _curve(rng, centre, edge, 0.3), thin)
    if rng.random() < (0.35 if view == "AP" else 0.05):  # central venous line: subclavian to the SVC
        side = float(rng.choice([-1.0, 1.0]))
        start = _on_film(p, p.mid + side * 0.7, p.right.clav_y - 0.05)
        end = _on_film(p, p.mid - 0.08, p.col_top + float(rng.uniform(0.5, 0.7)))
        out += 0.8 * _tube(canvas, _curve(rng, start, end, 0.1), thin)
    if rng.random() < (0.3 if view == "AP" else 0.03):  # nasogastric tube down the midline into the stomach
        top, end = _on_film(p, p.mid, -1.3), _on_film(p, p.mid + p.dome_x + 0.1, p.dome_r + 0.25)
        out += 0.6 * _tube(canvas, _curve(rng, top, end, 0.06), 1.5 * thin)
    if rng.random() < (0.25 if view == "AP" else 0.0):  # endotracheal tube, tip above the carina
        out += 0.5 * _tube(canvas, np.array([_on_film(p, p.mid, -1.3), _on_film(p, p.mid, p.col_top + 0.3)]), 3 * thin)
    return out


def _on_film(p: PersonParameters, x: float, y: float) -> tuple[float, float]:
    """Where the person's point (x, y) lies on the film (image coordinates), after pose and zoom."""
    fx, fy = to_image(p, np.float64(x), np.float64(y))
    return float(fx), float(fy)


def soft_tissue(rng: np.random.Generator, canvas: Canvas, view: str) -> np.ndarray:
    """Nipple shadows, breast soft tissue, AP scapulae and patchy lung density: added density."""
    p, c = canvas.params, canvas.c
    x, y = canvas.x, canvas.y  # person coordinates: these are parts of the person, posed with it
    out = np.zeros((canvas.size, canvas.size), np.float32)
    level = p.dome_r - float(rng.uniform(0.1, 0.3))
    if rng.random() < 0.4:  # nipple shadows: round, soft-edged, in the lower zones, often on one side only
        for sign in (-1.0, 1.0):
            if rng.random() < 0.75:
                cx, cy = p.mid + sign * float(rng.uniform(0.35, 0.6)), level + float(rng.uniform(-0.05, 0.05))
                r2 = (np.square(x - cx) + np.square(y - cy)) / 0.025**2
                out += float(rng.uniform(0.04, 0.12)) * np.clip(1.2 - r2, 0.0, 1.0)
    if rng.random() < 0.5:  # breast soft tissue: lower lateral density with a curved lower edge
        amount = float(rng.uniform(0.04, 0.14))
        for sign in (-1.0, 1.0):
            cx = p.mid + sign * 0.45
            q = np.square((x - cx) / 0.45) + np.square((y - (level - 0.1)) / 0.4)
            out += amount * np.clip(1.0 - q, 0.0, 1.0) ** 0.5 * np.clip((y - level + 0.45) / 0.15, 0.0, 1.0)
    if view == "AP":  # scapulae projected over the lateral lung fields
        for sign in (-1.0, 1.0):
            inner = p.mid + sign * float(rng.uniform(0.55, 0.7))
            band = np.clip((sign * (x - inner)) / 0.05, 0.0, 1.0) * (y < p.dome_r - 0.3) * (y > -0.75)
            out += float(rng.uniform(0.05, 0.12)) * band
    patches = smooth_field(rng.standard_normal((8, 8)), c, c, 0.12)
    out += float(rng.uniform(0.0, 0.08)) * np.tanh(patches) * canvas.any_lung()
    return out.astype(np.float32)


def scatter_fraction(rng: np.random.Generator) -> float:
    """The share of the detected signal that is scatter, 5-30 % on a film without a grid."""
    return float(rng.uniform(0.05, 0.3))


def veil(exposure: np.ndarray) -> np.ndarray:
    """Scatter's veil: the exposure blurred over about a third of the film. Computed from the healthy
    exposure, so an image and its twin get the same veil and differ only where the disease is."""
    size = len(exposure)
    c = ((np.arange(size) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)
    weights = np.exp(-0.5 * np.square((c[:, None] - c[None, ::4]) / 0.3)).astype(np.float32)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights @ exposure[::4, ::4] @ weights.T


def collimation(rng: np.random.Generator, size: int) -> np.ndarray:
    """The exposed field (bool): collimator blades leave bright unexposed borders on most films."""
    field = np.ones((size, size), bool)
    if rng.random() < 0.7:
        top, bottom, left, right = (int(round(rng.uniform(0.0, 0.07) * size)) for _ in range(4))
        field[:top], field[size - bottom :], field[:, :left], field[:, size - right :] = False, False, False, False
    return field


def side_marker(rng: np.random.Generator, size: int) -> np.ndarray:
    """A burned-in "L" or "R" in a top corner (bool mask), on most films."""
    out = np.zeros((size, size), bool)
    if rng.random() < 0.8:
        letter = np.array([[ch == "1" for ch in row] for row in _LETTERS[str(rng.choice(["L", "R"]))]])
        cell = max(1, int(round(size * float(rng.uniform(0.005, 0.009)))))
        glyph = np.kron(letter, np.ones((cell, cell), bool))
        top = int(round(size * float(rng.uniform(0.08, 0.15))))
        left = int(round(size * float(rng.uniform(0.06, 0.12))))
        if rng.random() < 0.5:
            left = size - left - glyph.shape[1]
        out[top : top + glyph.shape[0], left : left + glyph.shape[1]] = glyph
    return out


def view_adjusted(params: PersonParameters, view: str, rng: np.random.Generator) -> PersonParameters:
    """AP films: a magnified heart, higher and more horizontal clavicles, a poorer inspiration and
    more rotation (a supine or sitting patient at the bedside)."""
    extra_rotation = math.radians(float(rng.uniform(-3.0, 3.0) if view == "PA" else rng.uniform(-6.0, 6.0)))
    if view == "PA":
        return dataclasses.replace(params, rot=params.rot + extra_rotation)
    sides = {
        name: dataclasses.replace(
            getattr(params, name), clav_y=getattr(params, name).clav_y - 0.05, clav_angle=getattr(params, name).clav_angle * 0.5
        )
        for name in ("right", "left")
    }
    return dataclasses.replace(
        params,
        rot=params.rot + extra_rotation,
        ctr=params.ctr * float(rng.uniform(1.1, 1.25)),
        dome_r=params.dome_r - float(rng.uniform(0.0, 0.08)),
        **sides,
    )

"""Real-like product defects with exact masks, each drawn by its own small physical model.

These play the SCARCE REAL defects against which the synthesis methods (mask DDPM + blending, normal
DDPM + conditioning encoder) are judged, so they must not share code or appearance models with them.

Every defect computes a candidate image over the whole surface; the mask is then DEFINED as the pixels
whose value changed by at least MIN_CHANGE (one 8-bit grey level), and the image is the candidate
there and exactly the surface everywhere else. So `image == surface` outside the mask, every masked
pixel differs visibly (also after uint16 storage), and a defect on pixels it cannot change (a dark
crack on black) does not pretend to have changed them.

Appearance, with a light direction drawn per defect:
- scratch: a thin curved groove (quadratic Bezier), darker (shadowed groove) or brighter (coating
  scratched through to bare metal) across a smooth profile, fading at both ends, with a bright lip on
  the side facing the light.
- crack: a fracture that grows as a random walk with momentum and branches; dark, widest at its origin.
- hole: a dark elliptical cavity whose far inner wall catches a little light, with an anti-aliased
  edge and, outside it, the shadow of the raised burr on the side away from the light.
- stain: an irregular blob (noisy radial envelope) that scales the albedo (darker or lighter), with a
  soft edge and a slightly stronger rim where the deposit concentrates as it dries (coffee-ring effect).
- contamination: a cluster of small dark or bright particles scattered around a point.
Lengths scale with the image size, so a defect looks alike at every size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from twinray.shared.data.products.surfaces import MIN_SIZE, check_name, check_seed, rng_for
from twinray.shared.platform.errors import InvalidInput

DEFECT_VERSION = "product-defect/1"
DEFECT_KINDS = ("scratch", "crack", "hole", "stain", "contamination")
MIN_CHANGE = 1.0 / 255.0  # smallest change that counts as a defect pixel
MIN_AREA_PIXELS = 6
MAX_AREA_FRACTION = 0.2
ATTEMPTS = 8  # redraws (from derived streams of the same seed) when a defect lands out of bounds

Painter = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) coordinates of every pixel centre."""
    return np.mgrid[0:size, 0:size].astype(np.float64)


def _light(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0.0, 2 * math.pi)
    return np.array([math.sin(angle), math.cos(angle)])  # (row, column) unit vector towards the light


def _path_field(points: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance of every pixel to a sampled path, the index of its nearest path sample, and the
    (row, column) offset from that sample. Samples outside the image are dropped; (inf, -1, 0) when
    none is left."""
    cells = np.rint(points).astype(np.int64)
    inside = np.flatnonzero(((cells >= 0) & (cells < size)).all(axis=1))
    nearest = np.full((size, size), -1, np.int64)
    if inside.size == 0:
        return np.full((size, size), np.inf), nearest, np.zeros((2, size, size))
    nearest[cells[inside, 0], cells[inside, 1]] = inside
    distance, (rows, cols) = ndimage.distance_transform_edt(nearest < 0, return_indices=True)
    offset = np.stack([np.arange(size)[:, None] - rows, np.arange(size)[None, :] - cols]).astype(np.float64)
    return distance, nearest[rows, cols], offset


def _profile(distance: np.ndarray, half_width: np.ndarray | float) -> np.ndarray:
    """1 on the path, falling smoothly (cosine) to 0 half a pixel beyond `half_width`."""
    t = np.clip(distance / (np.asarray(half_width) + 0.5), 0.0, 1.0)
    return 0.5 + 0.5 * np.cos(math.pi * t)


def _scratch(surface: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = surface.shape[0]
    k = size / 128
    length = rng.uniform(0.25, 0.6) * size
    start = rng.uniform(0.15, 0.85, size=2) * size
    direction = rng.uniform(0.0, 2 * math.pi)
    end = start + length * np.array([math.sin(direction), math.cos(direction)])
    bow = rng.uniform(-0.25, 0.25) * length * np.array([math.cos(direction), -math.sin(direction)])
    control = (start + end) / 2 + bow
    t = np.linspace(0.0, 1.0, max(8, int(4 * length)))[:, None]
    points = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
    distance, nearest, offset = _path_field(points, size)
    along = np.where(nearest >= 0, nearest / (len(points) - 1), 0.0)
    fade = np.sin(math.pi * along) ** 0.5  # a scratch starts and ends shallow
    half_width = max(0.5, rng.uniform(0.3, 1.0) * k)
    groove = _profile(distance, half_width) * fade
    depth = rng.uniform(0.35, 0.7)
    if rng.random() < 0.3:  # coating scratched through: a bright groove
        image = surface + (1.0 - surface) * depth * groove
    else:
        image = surface * (1.0 - depth * groove)
    facing = (np.einsum("ijk,i->jk", offset, _light(rng)) > 0) & (distance > half_width)
    lip = np.clip(1.0 - (distance - half_width) / (1.0 + k), 0.0, 1.0) * facing * fade
    return image + rng.uniform(0.15, 0.35) * lip * (1.0 - image)


def _walk(rng: np.random.Generator, start: np.ndarray, angle: float, steps: int, jitter: float) -> np.ndarray:
    """Points of a half-pixel-step random walk whose heading drifts (momentum) and sometimes kinks."""
    turns = rng.normal(0.0, jitter, steps) + np.where(rng.random(steps) < 0.02, rng.normal(0, 0.5, steps), 0.0)
    headings = angle + np.cumsum(turns)
    steps_rc = 0.5 * np.stack([np.sin(headings), np.cos(headings)], axis=1)
    return start + np.cumsum(steps_rc, axis=0)


def _crack(surface: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = surface.shape[0]
    k = size / 128
    steps = int(2 * rng.uniform(0.3, 0.6) * size)
    angle = rng.uniform(0.0, 2 * math.pi)
    trunk = _walk(rng, rng.uniform(0.2, 0.8, size=2) * size, angle, steps, 0.08)
    base_width = max(0.5, rng.uniform(0.5, 1.3) * k)
    paths, widths = [trunk], [base_width * (1.0 - 0.7 * np.linspace(0, 1, steps))]
    for _ in range(rng.integers(1, 5)):
        at = int(rng.integers(steps // 5, steps - 1))
        side = rng.choice([-1.0, 1.0])
        heading = math.atan2(*(trunk[at] - trunk[at - 1])) + side * rng.uniform(0.4, 1.1)
        branch_steps = int(steps * rng.uniform(0.15, 0.45))
        paths.append(_walk(rng, trunk[at], heading, branch_steps, 0.1))
        widths.append(0.7 * widths[0][at] * (1.0 - 0.8 * np.linspace(0, 1, branch_steps)))
    points, width = np.concatenate(paths), np.concatenate(widths)
    distance, nearest, _ = _path_field(points, size)
    half_width = np.where(nearest >= 0, width[np.maximum(nearest, 0)], 0.0)
    return surface * (1.0 - rng.uniform(0.55, 0.85) * _profile(distance, half_width))


def _ellipse(rng: np.random.Generator, size: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Normalised radius (1 on the edge) and polar angle of every pixel around a random ellipse."""
    rows, cols = _grid(size)
    centre = rng.uniform(0.2, 0.8, size=2) * size
    tilt, aspect = rng.uniform(0.0, math.pi), rng.uniform(0.7, 1.0)
    dr, dc = rows - centre[0], cols - centre[1]
    a = dc * math.cos(tilt) + dr * math.sin(tilt)
    b = -dc * math.sin(tilt) + dr * math.cos(tilt)
    return np.hypot(a / radius, b / (radius * aspect)), np.arctan2(dr, dc)


def _hole(surface: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = surface.shape[0]
    radius = max(1.5, rng.uniform(0.03, 0.08) * size)
    rho, phi = _ellipse(rng, size, radius)
    light = rng.uniform(0.0, 2 * math.pi)
    facing = np.cos(phi - light)  # +1 on the side towards the light
    floor = rng.uniform(0.02, 0.1)
    cavity = floor + rng.uniform(0.03, 0.12) * np.clip(-facing, 0, 1) * rho  # the far inner wall catches light
    edge_px = 1.0 / radius  # one pixel, in normalised radius
    inside = np.clip((1.0 - rho) / edge_px + 0.5, 0.0, 1.0)  # anti-aliased edge
    rim = rng.uniform(0.15, 0.35)
    # a punched hole's raised burr casts its shadow on the side away from the light
    shadow = np.clip(1.0 - (rho - 1.0) / rim, 0.0, 1.0) ** 2 * (rho >= 1.0) * np.clip(-facing, 0, 1)
    outside = surface * (1.0 - rng.uniform(0.3, 0.6) * shadow)
    return inside * cavity + (1.0 - inside) * outside


def _stain(surface: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = surface.shape[0]
    radius = rng.uniform(0.05, 0.13) * size
    rho, _ = _ellipse(rng, size, radius)
    wobble = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=0.3 * radius, mode="wrap")
    wobble /= max(float(wobble.std()), 1e-12)
    level = 1.0 - rho + rng.uniform(0.15, 0.3) * wobble  # > 0 inside the irregular outline
    softness = rng.uniform(0.1, 0.3)
    alpha = np.clip(level / softness, 0.0, 1.0)
    alpha = alpha * alpha * (3 - 2 * alpha)  # smoothstep: a soft edge
    ring = np.exp(-((level - 0.5 * softness) ** 2) / (2 * (0.4 * softness) ** 2)) * (alpha > 0)
    gain = rng.uniform(0.5, 0.8) if rng.random() < 0.7 else rng.uniform(1.25, 1.5)
    strength = alpha * (1.0 + rng.uniform(0.2, 0.6) * ring)
    return surface * (1.0 + (gain - 1.0) * strength)


def _contamination(surface: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = surface.shape[0]
    k = size / 128
    rows, cols = _grid(size)
    count = int(rng.integers(6, 30))
    centre = rng.uniform(0.2, 0.8, size=2) * size
    spread = rng.uniform(0.02, 0.07) * size
    dark = rng.random() < 0.75  # dust and chips mostly dark, some bright (glitter, lint)
    image = surface.copy()
    for row, col in centre + spread * rng.standard_normal((count, 2)):
        radius = max(0.6, rng.uniform(0.4, 1.6) * k)
        distance = np.hypot(rows - row, cols - col)
        cover = np.clip(radius + 0.5 - distance, 0.0, 1.0)  # area coverage of a disc, anti-aliased
        value = rng.uniform(0.02, 0.2) if dark else rng.uniform(0.8, 0.98)
        image = image * (1.0 - cover) + value * cover
    return image


_PAINTERS: dict[str, Painter] = dict(zip(DEFECT_KINDS, (_scratch, _crack, _hole, _stain, _contamination), strict=True))


def check_kind(kind: object) -> str:
    return check_name(kind, DEFECT_KINDS, "defect kind")


def _check_surface(surface: object) -> np.ndarray:
    array = np.asarray(surface)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] < MIN_SIZE:
        raise InvalidInput(f"a product surface must be a square (H, W) array of side >= {MIN_SIZE}, got {array.shape}")
    if array.dtype.kind != "f" or not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        raise InvalidInput("a product surface must hold finite floats in [0, 1]")
    return array.astype(np.float32)


def render_defect(surface: np.ndarray, kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Put one `kind` defect drawn from `seed` on `surface` -> (float32 image, bool mask).

    The mask is exactly the pixels that changed (by >= MIN_CHANGE); it holds MIN_AREA_PIXELS to
    MAX_AREA_FRACTION of the image. A draw outside those bounds is redrawn from the next derived
    stream, up to ATTEMPTS times, so the result still depends on (surface, kind, seed) alone.
    """
    painter = _PAINTERS[check_kind(kind)]
    surface = _check_surface(surface)
    seed = check_seed(seed, "defect")
    limit = MAX_AREA_FRACTION * surface.size
    for attempt in range(ATTEMPTS):
        candidate = np.clip(painter(surface, rng_for(seed, DEFECT_KINDS.index(kind), attempt)), 0.0, 1.0)
        mask = np.abs(candidate.astype(np.float32) - surface) >= MIN_CHANGE
        if MIN_AREA_PIXELS <= mask.sum() <= limit:
            return np.where(mask, candidate.astype(np.float32), surface), mask
    raise InvalidInput(
        f"could not place a {kind} defect (seed {seed}) changing {MIN_AREA_PIXELS}..{int(limit)} pixels of this "
        f"surface in {ATTEMPTS} attempts; is the surface flat black or white?"
    )

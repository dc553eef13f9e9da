"""Seeded normal product surfaces: photographed textures and procedural materials.

Factories have plenty of good parts, so the normal class must be rich and varied: every seed gives a
different view of its material (crop, rotation, mirror, contrast and exposure for the photographed
textures; every random parameter for the procedural ones), and the same seed always gives the same
pixels. Photographed textures are scikit-image's bundled `brick`, `grass` and `gravel` (512 x 512,
shipped in the package, nothing is downloaded); `metal`, `fabric` and `plastic` are procedural.

Images are float32 (size, size) in [0, 1]. Lengths are fractions of `size`, so one seed looks alike
at every size.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from twinray.shared.platform.errors import InvalidInput

SURFACE_VERSION = "product-surface/1"
TEXTURE_CATEGORIES = ("brick", "grass", "gravel")
PROCEDURAL_CATEGORIES = ("metal", "fabric", "plastic")
CATEGORIES = TEXTURE_CATEGORIES + PROCEDURAL_CATEGORIES
MIN_SIZE, MAX_SIZE = 32, 2048

Renderer = Callable[[np.random.Generator, int], np.ndarray]


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """The generator of `seed` (and a sub-stream), so adding a draw in one stream keeps the others."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *stream])))


def check_seed(seed: object, what: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInput(f"{what} seed must be an integer >= 0, got {seed!r}")
    return int(seed)


@functools.lru_cache(maxsize=len(TEXTURE_CATEGORIES))
def _texture(category: str) -> np.ndarray:
    """The bundled 512 x 512 texture as float32 in [0, 1] (read once per process)."""
    from skimage import data  # slow to import (docs/decisions/0008-lazy-skimage-textures.md): only when needed

    pixels = getattr(data, category)()
    return (pixels.astype(np.float32) / 255.0).copy()


def _textured(category: str) -> Renderer:
    def render(rng: np.random.Generator, size: int) -> np.ndarray:
        """A rotated, mirrored, scaled square crop of the texture, sampled bilinearly.

        The crop side `side` (texture pixels) and angle are drawn first; the centre is then drawn
        where the whole rotated square stays inside the texture, so no pixel is extrapolated.
        """
        texture = _texture(category)
        extent = texture.shape[0]
        side = rng.uniform(0.3, 0.65) * extent
        angle = rng.uniform(0.0, 2.0 * math.pi)
        mirror = rng.random() < 0.5
        half = 0.5 * side * (abs(math.cos(angle)) + abs(math.sin(angle)))
        centre = rng.uniform(half, extent - 1 - half, size=2)
        scale = side / size  # texture pixels per output pixel
        if scale > 1.0:  # low-pass before subsampling, or the texture aliases
            texture = ndimage.gaussian_filter(texture, sigma=0.5 * (scale - 1.0) + 0.3)
        u, v = np.meshgrid(np.arange(size) - (size - 1) / 2, np.arange(size) - (size - 1) / 2)
        if mirror:
            u = -u
        cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
        rows = centre[0] + sin * u + cos * v
        cols = centre[1] + cos * u - sin * v
        image = ndimage.map_coordinates(texture, [rows, cols], order=1, mode="nearest")
        gamma, contrast, brightness = rng.uniform(0.8, 1.25), rng.uniform(0.8, 1.2), rng.uniform(-0.06, 0.06)
        image = np.clip(image, 0.0, 1.0) ** gamma
        return (image - image.mean()) * contrast + image.mean() + brightness

    return render


def _smooth_noise(rng: np.random.Generator, size: int, sigma: tuple[float, float] | float) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation, periodic (no edge artefacts)."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=sigma, mode="wrap")
    return field / max(float(field.std()), 1e-12)


def _metal(rng: np.random.Generator, size: int) -> np.ndarray:
    """Brushed metal: long streaks along the brushing direction (anisotropic noise), a fine grain,
    and a broad specular sheen across the part."""
    base = rng.uniform(0.45, 0.68)
    streak_length, streak_width = rng.uniform(0.08, 0.25) * size, max(0.5, rng.uniform(0.2, 0.6) * size / 128)
    streaks = _smooth_noise(rng, size, (streak_width, streak_length))
    fine = _smooth_noise(rng, size, (0.5, rng.uniform(1.0, 4.0) * size / 128))
    position = np.linspace(-1.0, 1.0, size)[None, :]
    sheen = np.exp(-((position - rng.uniform(-0.6, 0.6)) ** 2) / (2 * rng.uniform(0.2, 0.6) ** 2))
    image = base + rng.uniform(0.03, 0.07) * streaks + rng.uniform(0.01, 0.025) * fine
    image = image + rng.uniform(0.05, 0.15) * (sheen - sheen.mean())
    return image.T if rng.random() < 0.5 else image  # brushed horizontally or vertically


def _fabric(rng: np.random.Generator, size: int) -> np.ndarray:
    """Plain weave: warp and weft threads alternate over/under in a checkerboard of thread cells.
    A thread on top is bright across its middle and shaded at its sides (a rounded yarn under
    diffuse light); each thread has its own dye shade; the grid is slightly rotated and wavy."""
    period = max(4.0, size / rng.uniform(10.0, 22.0))
    angle = rng.uniform(-0.25, 0.25)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    u = (x * math.cos(angle) + y * math.sin(angle)) / period
    v = (-x * math.sin(angle) + y * math.cos(angle)) / period
    wave = rng.uniform(0.0, 0.12)
    u = u + wave * np.sin(2 * math.pi * v / rng.uniform(3.0, 8.0) + rng.uniform(0, 2 * math.pi))
    v = v + wave * np.sin(2 * math.pi * u / rng.uniform(3.0, 8.0) + rng.uniform(0, 2 * math.pi))
    u, v = u + rng.uniform(0, 2), v + rng.uniform(0, 2)
    column, row = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    fu, fv = u - column, v - row
    shades = rng.normal(0.0, rng.uniform(0.01, 0.04), size=(2, 4 * size))
    warp_shade = shades[0][np.mod(column, shades.shape[1])]
    weft_shade = shades[1][np.mod(row, shades.shape[1])]
    warp_on_top = (column + row) % 2 == 0
    across = np.where(warp_on_top, fu, fv)  # position across the visible thread
    along = np.where(warp_on_top, fv, fu)  # position along it (it dips under at both ends)
    profile = np.sin(math.pi * across) ** 0.6 * (0.75 + 0.25 * np.sin(math.pi * along))
    base, depth = rng.uniform(0.35, 0.6), rng.uniform(0.2, 0.35)
    fibres = _smooth_noise(rng, size, 0.6)
    return base + depth * (profile - 0.5) + np.where(warp_on_top, warp_shade, weft_shade) + 0.015 * fibres


def _plastic(rng: np.random.Generator, size: int) -> np.ndarray:
    """Painted plastic: an even albedo under smooth low-frequency shading (curvature, lighting
    gradient) with a fine speckle from the paint's pigment and surface grain."""
    base = rng.uniform(0.3, 0.7)
    shading = _smooth_noise(rng, size, rng.uniform(0.15, 0.3) * size)
    y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
    direction = rng.uniform(0.0, 2 * math.pi)
    gradient = x * math.cos(direction) + y * math.sin(direction)
    speckle = _smooth_noise(rng, size, rng.uniform(0.4, 0.9))
    shading_amp, gradient_amp, speckle_amp = rng.uniform(0.02, 0.06), rng.uniform(0.05, 0.15), rng.uniform(0.008, 0.025)
    return base + shading_amp * shading + gradient_amp * gradient + speckle_amp * speckle


_RENDERERS: dict[str, Renderer] = {
    **{category: _textured(category) for category in TEXTURE_CATEGORIES},
    **dict(zip(PROCEDURAL_CATEGORIES, (_metal, _fabric, _plastic), strict=True)),
}


def check_name(value: object, names: tuple[str, ...], what: str) -> str:
    """`value` when it is one of `names`; InvalidInput listing them otherwise."""
    if not isinstance(value, str) or value not in names:
        raise InvalidInput(f"unknown {what} {value!r}: choose one of {', '.join(names)}")
    return value


def check_category(category: object) -> str:
    return check_name(category, CATEGORIES, "product category")


def check_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InvalidInput(f"product image size must be an integer in {MIN_SIZE}..{MAX_SIZE}, got {size!r}")
    return int(size)


def render_surface(category: str, size: int, seed: int) -> np.ndarray:
    """A normal (defect-free) `category` surface, float32 (size, size) in [0, 1], fixed by `seed`."""
    render = _RENDERERS[check_category(category)]
    image = render(rng_for(check_seed(seed, "surface"), CATEGORIES.index(category)), check_size(size))
    return np.clip(image, 0.0, 1.0).astype(np.float32)

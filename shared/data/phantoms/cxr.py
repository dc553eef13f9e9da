"""Deterministic chest-X-ray phantoms with known anatomy, lesions and the lesion-free twin.

No real radiograph comes with the same person's healthy image. A phantom does: a PERSON (body,
lungs, heart, diaphragm, clavicles, ribs, pose, exposure, noise realisation) drawn from
`person_seed` is rendered without and with a DISEASE (0..3 pneumonia-like consolidations inside the
lung fields) drawn from `lesion_seed`. Every rendering step after the lesion density is pointwise,
so the twin differs from the image only inside `lesion_mask`.

Geometry lives in normalised person coordinates (x to the image right, y down, the image spans
[-1, 1] before the pose), so the same person looks the same at any size. Intensities follow
I = 1 - exp(-k * density), so dense structures are bright as on a radiograph.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from twinray.shared.data import anatomy as A
from twinray.shared.platform.errors import InvalidInput

GENERATOR_VERSION = "cxr-phantom/1"
FIELD_OF_VIEW_MM = 430.0
MAX_LESIONS = 3
MIN_SIZE, MAX_SIZE = 64, 4096

Fields = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Phantom:
    """One rendered phantom. `boxes` rows are (x_min, y_min, x_max, y_max) in pixel edges, so
    x_max - x_min is the box width in pixels; one row per lesion. `lesion_seed` is None when healthy."""

    image: np.ndarray  # float32 (H, W) in [0, 1], bright = dense
    twin: np.ndarray  # the same person without lesions; equal to `image` outside `lesion_mask`
    anatomy: np.ndarray  # uint8 (H, W), indices of twinray.shared.data.anatomy.ANATOMY_CLASSES
    lesion_mask: np.ndarray  # bool (H, W)
    boxes: np.ndarray  # float32 (N, 4)
    person_seed: int
    lesion_seed: int | None
    spacing_mm: float


def _uniform(low: float, high: float, *, degrees: bool = False, per_body_width: bool = False) -> Any:
    """A parameter drawn uniformly from [low, high); `degrees` are stored in radians, and a
    `per_body_width` draw is multiplied by the person's `body_w`."""
    return dataclasses.field(metadata={"range": (low, high), "degrees": degrees, "per_body_width": per_body_width})


def _draw(cls: type, rng: np.random.Generator, body_w: float | None = None) -> dict[str, float]:
    """One draw per ranged field of dataclass `cls`, in declaration order (the order fixes the draws)."""
    values = {}
    for field in dataclasses.fields(cls):
        if "range" not in field.metadata:
            continue
        value = rng.uniform(*field.metadata["range"])
        if field.metadata["degrees"]:
            value = math.radians(value)
        if field.metadata["per_body_width"]:
            value = value * body_w
        values[field.name] = float(value)  # Python floats: numpy never promotes float32 arrays by them
    return values


@dataclasses.dataclass(frozen=True)
class ChestSide:
    """The shape of one lung and its clavicle: the two sides are drawn apart, so they differ."""

    lat: float = _uniform(0.78, 0.85, per_body_width=True)  # lateral reach of the lung from the centre
    apex: float = _uniform(-0.76, -0.66)  # y of the lung apex
    egg: float = _uniform(0.05, 0.2)  # how much the lung narrows towards its apex
    skew: float = _uniform(0.0, 0.15)  # lateral lean of the lung with height
    clav_x: float = _uniform(0.07, 0.11)  # medial end of the clavicle, from the midline
    clav_y: float = _uniform(-0.62, -0.54)  # y of the clavicle's medial end
    clav_angle: float = _uniform(-4.0, 16.0, degrees=True)  # rise of the clavicle towards the shoulder
    clav_len: float = _uniform(0.5, 0.6, per_body_width=True)
    clav_th: float = _uniform(0.068, 0.082)  # clavicle thickness
    clav_sag: float = _uniform(-0.012, 0.012)  # amplitude of the clavicle's S-curve


@dataclasses.dataclass(frozen=True)
class PersonParameters:
    """Every shape, pose and rendering parameter of one person, in normalised coordinates.

    The field order is the draw order: reordering, adding or removing a field changes every person.
    """

    # Pose on the detector.
    rot: float = _uniform(-3.0, 3.0, degrees=True)
    shift_x: float = _uniform(-0.03, 0.03)
    shift_y: float = _uniform(-0.03, 0.03)
    zoom: float = _uniform(0.94, 1.04)
    # Trunk (a superellipse) and neck.
    body_w: float = _uniform(0.88, 0.98)
    body_cy: float = _uniform(0.2, 0.32)
    body_p: float = _uniform(3.0, 4.0)
    neck_w: float = _uniform(0.2, 0.27)
    # Mediastinal column: midline and half-widths to the patient's right and left.
    mid: float = _uniform(-0.02, 0.02)
    col_wr: float = _uniform(0.085, 0.11)
    col_wl: float = _uniform(0.1, 0.13)
    col_top: float = _uniform(-0.82, -0.72)
    # Diaphragm domes.
    dome_r: float = _uniform(0.22, 0.36)
    dome_drop: float = _uniform(0.02, 0.08)
    dome_k: float = _uniform(0.8, 1.3)
    dome_x: float = _uniform(0.3, 0.42)
    # Heart: ctr is the cardiothoracic ratio.
    ctr: float = _uniform(0.4, 0.55)
    heart_tilt: float = _uniform(8.0, 25.0, degrees=True)
    heart_aspect: float = _uniform(0.7, 0.85)
    heart_shift: float = _uniform(0.15, 0.28)
    # Ribs: posterior arcs, then the fainter anterior ones.
    rib_spacing: float = _uniform(0.12, 0.145)
    rib_phase: float = _uniform(0.0, 1.0)
    rib_alpha: float = _uniform(0.1, 0.3)
    rib_beta: float = _uniform(0.7, 1.0)
    rib_sharp: float = _uniform(3.0, 6.0)
    rib_front: float = _uniform(0.3, 0.45)
    rib_front_phase: float = _uniform(0.0, 1.0)
    # Projected densities of each structure.
    d_soft: float = _uniform(0.9, 1.1)
    d_air: float = _uniform(0.78, 0.9)
    d_heart: float = _uniform(0.55, 0.7)
    d_col: float = _uniform(0.3, 0.4)
    d_spine: float = _uniform(0.1, 0.16)
    d_abd: float = _uniform(0.3, 0.42)
    d_clav: float = _uniform(0.45, 0.6)
    d_rib: float = _uniform(0.1, 0.16)
    d_trachea: float = _uniform(0.12, 0.2)
    d_bubble: float = _uniform(0.0, 0.35)
    d_vessel: float = _uniform(0.08, 0.14)
    d_hilum: float = _uniform(0.12, 0.2)
    # Exposure and display: attenuation k, gamma, contrast, offset, background, heel effect, noise.
    k: float = _uniform(0.9, 1.25)
    gamma: float = _uniform(0.85, 1.15)
    contrast: float = _uniform(0.92, 1.05)
    offset: float = _uniform(0.02, 0.05)
    bg_amp: float = _uniform(0.01, 0.035)
    heel: float = _uniform(-0.03, 0.03)
    noise: float = _uniform(0.006, 0.016)
    # The patient's right (image left) and left, drawn after everything above, right first.
    right: ChestSide
    left: ChestSide

    @classmethod
    def draw(cls, rng: np.random.Generator) -> PersonParameters:
        """The next 66 uniform draws of `rng`: the fields above, then the right side, then the left."""
        general = _draw(cls, rng)
        right, left = (ChestSide(**_draw(ChestSide, rng, general["body_w"])) for _ in range(2))
        return cls(**general, right=right, left=left)


@dataclasses.dataclass(frozen=True)
class Person:
    """Identity: the parameters and the random grids of one person."""

    params: PersonParameters
    background: np.ndarray  # (n, n) standard-normal grid of the low-frequency background
    vessels: np.ndarray  # (n, n) standard-normal grid of the lung markings
    noise_seed: np.random.SeedSequence


def draw_person(person_seed: int) -> Person:
    """Draw a person; the noise gets its own stream so that adding a parameter keeps the noise."""
    geometry_ss, noise_ss = np.random.SeedSequence(person_seed).spawn(2)
    rng = np.random.Generator(np.random.PCG64(geometry_ss))
    params = PersonParameters.draw(rng)
    grids = rng.standard_normal((5, 5)), rng.standard_normal((40, 40))
    return Person(params, *grids, noise_ss)


def soft_inside(f: np.ndarray, eps: float) -> np.ndarray:
    """Inside (f < 0) -> 1, outside -> 0, over a ramp of width `eps` centred on f = 0."""
    return np.minimum(np.maximum(f * (-1.0 / eps) + 0.5, 0.0), 1.0)


def _dome(p: PersonParameters, x: np.ndarray) -> np.ndarray:
    """y of the diaphragm at x: two domes, the patient's right (image left) higher, each falling
    steeply to its costophrenic angle and gently towards the heart."""
    right = x - (p.mid - p.dome_x)
    left = x - (p.mid + p.dome_x)
    right = p.dome_r + p.dome_k * np.square(right) * (0.4 + 0.6 * (right < 0))
    left = p.dome_r + p.dome_drop + p.dome_k * np.square(left) * (0.4 + 0.6 * (left > 0))
    return np.minimum(right, left)


def _heart_geometry(p: PersonParameters) -> tuple[float, float, float, float]:
    """Centre and semi-axes of the heart ellipse, sized so heart width / thorax width = ctr."""
    c, s = math.cos(p.heart_tilt), math.sin(p.heart_tilt)
    half_width = 0.5 * p.ctr * (p.right.lat + p.left.lat)
    a = half_width / math.hypot(c, p.heart_aspect * s)
    b = a * p.heart_aspect
    hx = p.mid + p.heart_shift * 2 * half_width
    hy = float(_dome(p, np.float32(hx))) - 0.4 * math.hypot(a * s, b * c)
    return hx, hy, a, b


def _power(a: np.ndarray, e: float) -> np.ndarray:
    """a ** e for a > 0, in float32 (fast: numpy's pow is slow on zeros and negatives)."""
    return np.exp(np.log(a) * e)


def person_fields(p: PersonParameters, x: np.ndarray, y: np.ndarray) -> Fields:
    """Signed fields (negative inside, roughly a distance in normalised units) and density profiles.

    All float32: scalars are Python floats so that numpy never promotes the arrays to float64.
    """
    out: Fields = {}
    mid = p.mid
    # Body: a superellipse trunk plus the neck.
    bw, bp = p.body_w, p.body_p
    q_body = _power(np.abs(x * (1.0 / bw)) + 1e-6, bp) + _power(np.abs((y - p.body_cy) * 0.8) + 1e-6, bp)
    out["body"] = np.minimum((_power(q_body, 1.0 / bp) - 1.0) * bw, np.maximum(np.abs(x) - p.neck_w, y + 0.2))
    out["above_dome"] = y - _dome(p, x)
    # Lungs: blunt eggs, widest near the domes, cut by the diaphragm and the mediastinal column.
    for side, chest, sign, col_w in (("r", p.right, -1.0, p.col_wr), ("l", p.left, 1.0, p.col_wl)):
        medial = mid + sign * col_w
        a = (chest.lat - sign * medial) / 1.7  # the egg overlaps the column: a straight medial border
        cx, cy = medial + sign * 0.7 * a, p.dome_r + 0.1
        yy = (y - cy) * (1.0 / (cy - chest.apex))
        xx = (sign * (x - cx) - chest.skew * (y - cy)) / (a * np.maximum(1.0 + chest.egg * yy, 0.3))
        up = np.square(np.minimum(yy, 0.0))
        q = xx * xx + np.square(np.maximum(yy, 0.0)) + 0.4 * up + 0.6 * np.square(up)  # a blunt apex
        out[f"egg_{side}"] = (np.sqrt(q) - 1.0) * a
        out[f"air_{side}"] = np.sqrt(np.sqrt(np.clip(1.0 - q, 0.0, 1.0)))
        hilum_y = 0.55 * cy + 0.45 * chest.apex
        out[f"hilum_{side}"] = np.sqrt(np.square(x - (medial + sign * 0.07)) + np.square((y - hilum_y) * 0.7)) - 0.06
        out[f"lung_{side}"] = np.maximum(np.maximum(out[f"egg_{side}"], out["above_dome"]), sign * (medial - x))
    # Heart: a tilted ellipse sitting on the left dome.
    hx, hy, ha, hb = _heart_geometry(p)
    c, s = math.cos(p.heart_tilt), math.sin(p.heart_tilt)
    du, dv = x - hx, y - hy
    q = np.square((c * du + s * dv) * (1.0 / ha)) + np.square((c * dv - s * du) * (1.0 / hb))
    out["heart"] = np.maximum((np.sqrt(q) - 1.0) * hb, out["above_dome"])
    out["heart_profile"] = 0.7 + 0.3 * np.clip(1.0 - q, 0.0, 1.0)
    # Mediastinal column (spine, trachea, great vessels) from the neck down to the diaphragm, plus aortic knob.
    knob = np.sqrt(np.square(x - (mid + p.col_wl + 0.01)) + np.square(y - (p.col_top + 0.42))) - 0.065
    out["column_sides"] = np.minimum(np.maximum(x - (mid + p.col_wl), (mid - p.col_wr) - x), knob)
    out["column_top"] = p.col_top - y
    out["column"] = np.maximum(np.maximum(out["column_sides"], out["column_top"]), out["above_dome"])
    dx = np.abs(x - mid)
    out["trachea"] = np.maximum(dx - 0.03, y - (p.col_top + 0.45))
    out["spine"] = dx - 0.055
    out["vertebrae"] = 0.8 + 0.2 * np.cos(y * (2.0 * math.pi / p.rib_spacing))
    bubble_x, bubble_y = mid + p.dome_x + 0.1, p.dome_r + p.dome_drop + 0.16
    out["bubble"] = np.sqrt(np.square(x - bubble_x) + np.square(y - bubble_y)) - 0.07
    # Clavicles: thick, slightly S-shaped bars from the sternum up and out to the shoulders.
    for side, chest, sign in (("r", p.right, -1.0), ("l", p.left, 1.0)):
        ang, length = chest.clav_angle, chest.clav_len
        t = (sign * (x - mid) - chest.clav_x) * (1.0 / (length * math.cos(ang)))
        centre = chest.clav_y - t * (length * math.sin(ang)) + chest.clav_sag * np.sin(t * (2 * math.pi))
        u = np.square(2.0 * t - 1.0)
        taper = np.sqrt(np.clip(1.0 - u * u * u, 0.0, 1.0))  # rounded ends
        half = (0.5 * chest.clav_th / math.cos(ang)) * taper
        out[f"clav_{side}"] = np.abs(y - centre) - half + (half <= 0)
    # Ribs, not labelled: posterior ribs arch up from the spine and fall laterally; fainter anterior
    # ribs fall medially. Both live inside the rib cage (the inflated lung eggs).
    arc = y + p.rib_alpha * dx - p.rib_beta * np.square(dx)
    spacing = math.pi / p.rib_spacing
    back = np.square(np.cos((arc - 0.08 * np.square(arc)) * spacing + math.pi * p.rib_phase))
    front = np.square(np.cos((y - p.rib_front * dx) * (spacing / 1.3) + math.pi * p.rib_front_phase))
    back, front = _power(back + 1e-6, p.rib_sharp), _power(front + 1e-6, p.rib_sharp)  # narrow bands
    out["ribs"] = (back + 0.4 * front) * np.clip((dx - 0.06) * 10.0, 0.0, 1.0)
    out["cage"] = np.maximum(np.minimum(out["egg_r"], out["egg_l"]) - 0.06, out["above_dome"] - 0.15)
    return out


def anatomy_labels(f: Fields) -> np.ndarray:
    """Hard anatomy labels, applied lowest priority first (see twinray.shared.data.anatomy)."""
    labels = np.zeros(f["body"].shape, np.uint8)
    body = f["body"] < 0
    labels[body & (f["above_dome"] > 0)] = A.DIAPHRAGM
    labels[body & (f["lung_r"] < 0)] = A.LUNG_RIGHT
    labels[body & (f["lung_l"] < 0)] = A.LUNG_LEFT
    labels[f["column"] < 0] = A.MEDIASTINUM_SPINE
    labels[f["heart"] < 0] = A.HEART
    labels[body & (f["clav_r"] < 0)] = A.CLAVICLE_RIGHT
    labels[body & (f["clav_l"] < 0)] = A.CLAVICLE_LEFT
    return labels


def healthy_density(p: PersonParameters, f: Fields, vessels: np.ndarray, eps: float) -> np.ndarray:
    """Healthy projected density (the line integral of attenuation), roughly 0..1.6.

    `vessels` is a smooth unit-variance field; its positive part draws the lung markings, densest
    near the hila.
    """

    def soft(name: str, width: float = eps) -> np.ndarray:
        return soft_inside(f[name], width)

    d = p.d_soft * np.sqrt(np.clip(f["body"] * (-1.0 / 0.45), 0.0, 1.0))
    air = f["air_r"] * soft("lung_r") + f["air_l"] * soft("lung_l")
    heart = soft("heart")
    d -= p.d_air * air * (1.0 - 0.7 * heart)
    d += air * (p.d_vessel * np.clip(vessels, 0.0, None) * (0.3 + soft("hilum_r", 0.5) + soft("hilum_l", 0.5)))
    d += p.d_hilum * (soft("hilum_r", 0.08) + soft("hilum_l", 0.08))
    d += p.d_heart * f["heart_profile"] * heart
    column = soft("column_sides", 0.04) * soft("above_dome") * soft("column_top", 0.3)
    d += p.d_col * column - p.d_trachea * soft("trachea", 0.03)
    d += p.d_spine * soft("spine", 0.03) * f["vertebrae"]
    d += p.d_abd * soft_inside(-f["above_dome"], eps) - p.d_bubble * soft("bubble", 0.03)
    for clavicle in (f["clav_r"], f["clav_l"]):  # a brighter cortical rim
        rim = np.minimum(np.maximum(clavicle * 50.0 + 1.0, 0.0), 1.0)
        d += p.d_clav * soft_inside(clavicle, eps) * (0.65 + 0.35 * rim)
    d += p.d_rib * f["ribs"] * soft("cage", 0.08)
    return d * soft("body")


def smooth_field(grid: np.ndarray, rows: np.ndarray, cols: np.ndarray, width: float) -> np.ndarray:
    """Unit-variance smooth field: Gaussian interpolation of an (n, n) grid of normals spread over
    [-1, 1]^2, evaluated at image coordinates `rows` x `cols` (1-D)."""

    def weights(at: np.ndarray) -> np.ndarray:
        nodes = np.linspace(-1.0, 1.0, grid.shape[0])
        k = np.exp(-0.5 * np.square((at[:, None] - nodes[None, :]) / width))
        return k / np.sqrt(np.square(k).sum(axis=1, keepdims=True))

    return (weights(rows) @ grid @ weights(cols).T).astype(np.float32)


def person_grid(p: PersonParameters, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel centres in image coordinates (1-D) and the person coordinates of every pixel."""
    c = ((np.arange(size) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)
    cos, sin, zoom = math.cos(p.rot), math.sin(p.rot), p.zoom
    gx, gy = c[None, :] - p.shift_x, c[:, None] - p.shift_y
    return c, (cos * gx + sin * gy) * (1.0 / zoom), (cos * gy - sin * gx) * (1.0 / zoom)


def to_image(p: PersonParameters, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Person coordinates -> image coordinates (the inverse of the pose in `_grid`)."""
    cos, sin, zoom = math.cos(p.rot), math.sin(p.rot), p.zoom
    return p.shift_x + zoom * (cos * x - sin * y), p.shift_y + zoom * (sin * x + cos * y)


@dataclasses.dataclass(frozen=True)
class _Lesion:
    """One consolidation: Gaussian components around a centre inside a lung, in person coordinates."""

    centre: tuple[float, float]
    offsets: np.ndarray  # (k, 2), the first is (0, 0)
    sigmas: np.ndarray  # (k, 2)
    weights: np.ndarray  # (k,), the first is 1
    amplitude: float
    threshold: float


def _disease(p: PersonParameters, lesion_seed: int, count: int | None) -> tuple[list[_Lesion], np.ndarray]:
    """The lesions of `lesion_seed` placed in this person's lungs, and their texture grid.

    The random stream is consumed identically whatever `count` is, so lesion i of a seed keeps its
    shape when fewer or more lesions are asked for. Each centre is the first of 128 random points
    whose neighbourhood (+-0.05) lies in one lung field.
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(lesion_seed)))
    drawn = int(rng.integers(1, MAX_LESIONS + 1))
    candidates = rng.uniform((-0.9, -0.75), (0.9, 0.65), size=(MAX_LESIONS, 128, 2))
    probes = candidates[None] + 0.05 * np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]])[:, None, None]
    labels = anatomy_labels(person_fields(p, probes[..., 0].astype(np.float32), probes[..., 1].astype(np.float32)))
    valid = np.isin(labels[0], A.LUNGS) & (labels == labels[0]).all(axis=0)
    if not valid.any(axis=1).all():
        raise RuntimeError(f"no room for a lesion in the lungs of this person (lesion seed {lesion_seed})")
    lesions = []
    for i in range(MAX_LESIONS):
        k = int(rng.integers(4, 8))
        lesions.append(
            _Lesion(
                centre=tuple(float(v) for v in candidates[i, np.argmax(valid[i])]),
                offsets=np.vstack([np.zeros(2), rng.normal(0.0, 0.09, size=(k - 1, 2))]),
                sigmas=rng.uniform(0.06, 0.15, size=(k, 2)),
                weights=np.concatenate([[1.0], rng.uniform(0.4, 0.9, size=k - 1)]),
                amplitude=float(rng.uniform(0.25, 0.45)),
                threshold=float(rng.uniform(0.2, 0.35)),
            )
        )
    return lesions[: drawn if count is None else count], rng.standard_normal((16, 16))


def _lesion_density(
    p: PersonParameters, lesion: _Lesion, c: np.ndarray, texture_grid: np.ndarray
) -> tuple[tuple[slice, slice], np.ndarray]:
    """Density of one lesion, before it is confined to the lungs, on the window of the image grid
    `c` x `c` outside which it is zero. Returns (window, density in the window).

    Components are axis-aligned in the image, so each is an outer product of two 1-D Gaussians.
    The sum is normalised at the centre and capped at 1 (a plateau, like a consolidation), textured
    by up to +-50 %, and cut at `threshold`, so it is exactly zero outside a compact, blobby support.
    """
    cx, cy = to_image(p, lesion.centre[0] + lesion.offsets[:, 0], lesion.centre[1] + lesion.offsets[:, 1])
    sx, sy = lesion.sigmas[:, 0] * p.zoom, lesion.sigmas[:, 1] * p.zoom
    ex = np.exp(-0.5 * np.square((c[None, :] - cx[:, None]) / sx[:, None]))  # (k, W)
    ey = lesion.weights[:, None] * np.exp(-0.5 * np.square((c[None, :] - cy[:, None]) / sy[:, None]))
    at_centre = float(lesion.weights @ np.exp(-0.5 * (np.square((cx - cx[0]) / sx) + np.square((cy - cy[0]) / sy))))
    # field > threshold needs g > floor, so some component > floor / k in both of its factors.
    floor = lesion.threshold * at_centre / 1.5 / len(lesion.weights)
    rows, cols = np.flatnonzero((ey > floor).any(axis=0)), np.flatnonzero((ex > floor).any(axis=0))
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    g = (ey[:, window[0]].T @ ex[:, window[1]]).astype(np.float32)
    texture = smooth_field(texture_grid, c[window[0]], c[window[1]], 0.06 * p.zoom)
    field = np.minimum(g * (1.0 / at_centre), 1.0) * (1.0 + 0.5 * np.tanh(texture))
    ramp = np.clip((field - lesion.threshold) * (1.0 / (1.0 - lesion.threshold)), 0.0, None)
    return window, lesion.amplitude * ramp * np.sqrt(ramp)


def expose(p: PersonParameters, density: np.ndarray, background: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Density -> displayed intensity: exposure, gamma, contrast, background and signal-dependent noise."""
    i = _power(np.clip(1.0 - np.exp(density * -p.k), 0.0, 1.0) + 1e-6, p.gamma)
    i = p.offset + p.contrast * i + background
    return np.clip(i + p.noise * (0.4 + i) * noise, 0.0, 1.0)


def render_phantom(
    person_seed: int, size: int = 256, *, lesion_seed: int | None = None, lesion_count: int | None = None
) -> Phantom:
    """Render person `person_seed` at `size` x `size`, healthy or with the disease of `lesion_seed`.

    `lesion_seed=None` gives a healthy phantom (image == twin, no boxes). With a seed, the disease
    has `lesion_count` lesions (0..MAX_LESIONS), or 1..MAX_LESIONS drawn from the seed when None.
    Same arguments -> identical arrays.
    """
    if not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InvalidInput(f"phantom size must be an integer in {MIN_SIZE}..{MAX_SIZE}, got {size!r}")
    if person_seed < 0 or (lesion_seed is not None and lesion_seed < 0):
        raise InvalidInput(f"phantom seeds must be >= 0, got person {person_seed}, lesion {lesion_seed}")
    if lesion_count is not None and (lesion_seed is None or not 0 <= lesion_count <= MAX_LESIONS):
        raise InvalidInput(f"lesion_count needs a lesion_seed and must be in 0..{MAX_LESIONS}, got {lesion_count}")
    person = draw_person(person_seed)
    p = person.params
    c, x, y = person_grid(p, size)
    vessels = smooth_field(person.vessels, c, c, 0.03 * p.zoom)
    anatomy = np.empty((size, size), np.uint8)
    density = np.empty((size, size), np.float32)
    lung = np.empty((size, size), np.float32)  # the lung fields' signed distance, for lesions
    step = max(1, 16384 // size)  # row blocks of 64 KiB arrays: they stay in cache and off mmap
    for r in range(0, size, step):
        block = slice(r, r + step)
        fields = person_fields(p, x[block], y[block])
        anatomy[block] = anatomy_labels(fields)
        density[block] = healthy_density(p, fields, vessels[block], max(0.012, 3.0 / size))
        lung[block] = np.minimum(fields["lung_r"], fields["lung_l"])
    background = p.bg_amp * smooth_field(person.background, c, c, 0.5) + p.heel * c[:, None]
    noise = np.random.Generator(np.random.PCG64(person.noise_seed)).standard_normal((size, size), np.float32)
    twin = expose(p, density, background, noise)

    lesion_density = np.zeros_like(density)
    boxes = []
    if lesion_seed is not None:
        lesions, texture_grid = _disease(p, lesion_seed, lesion_count)
        for lesion in lesions:
            (rows, cols), one = _lesion_density(p, lesion, c, texture_grid)
            in_lungs = (anatomy[rows, cols] == A.LUNG_RIGHT) | (anatomy[rows, cols] == A.LUNG_LEFT)
            one *= np.clip(lung[rows, cols] * (-1.0 / 0.03), 0.0, 1.0) * in_lungs  # fades in at the pleura
            hit_rows, hit_cols = np.flatnonzero((one > 0).any(axis=1)), np.flatnonzero((one > 0).any(axis=0))
            x0, y0 = cols.start + hit_cols[0], rows.start + hit_rows[0]
            boxes.append((x0, y0, cols.start + hit_cols[-1] + 1, rows.start + hit_rows[-1] + 1))
            np.maximum(lesion_density[rows, cols], one, out=lesion_density[rows, cols])
    lesion_mask = lesion_density > 0
    image = twin.copy()
    image[lesion_mask] = expose(
        p, density[lesion_mask] + lesion_density[lesion_mask], background[lesion_mask], noise[lesion_mask]
    )
    return Phantom(
        image=image,
        twin=twin,
        anatomy=anatomy,
        lesion_mask=lesion_mask,
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        person_seed=int(person_seed),
        lesion_seed=None if lesion_seed is None else int(lesion_seed),
        spacing_mm=FIELD_OF_VIEW_MM / size,
    )

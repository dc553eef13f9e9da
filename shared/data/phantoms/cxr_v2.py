"""`cxr-phantom/2`: the same person rendered with and without disease, where "bright inside the lungs"
is not enough to find it.

A person is a `cxr-phantom/1` person (twinray.shared.data.phantoms.cxr) seen in a PA or AP view, with
confounders that are the same in the image and its twin (twinray.shared.data.phantoms.confounders),
and a disease of one or two pathology classes (twinray.shared.data.phantoms.pathologies) whose counts,
sizes and positions are fitted on real annotation tables (twinray.shared.data.phantoms.calibration).
Exposure is pointwise and scatter comes from the healthy exposure, so the twin differs from the image
exactly where a lesion changed the density: `lesion_labels` says which lesion, `lesion_classes` its class.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from twinray.shared.data.phantoms import confounders
from twinray.shared.data.phantoms.calibration import FIT, FRAMING_SHIFT_Y
from twinray.shared.data.phantoms.canvas import Canvas, healthy_canvas
from twinray.shared.data.phantoms.cxr import FIELD_OF_VIEW_MM, MAX_SIZE, MIN_SIZE, draw_person, expose, smooth_field
from twinray.shared.data.phantoms.pathologies import DRAWERS, PATHOLOGIES
from twinray.shared.platform.errors import InvalidInput

GENERATOR_VERSION = "cxr-phantom/2"
MAX_LESIONS = 6
VIEWS = ("PA", "AP")
# Which pathologies an abnormal phantom shows: a balanced mix (a design choice so every class has
# test cases, not a prevalence), and how often a second class joins the first.
CLASS_MIX = {"opacity": 0.4, "nodule": 0.2, "effusion": 0.2, "pneumothorax": 0.2}
SECOND_CLASS = 0.25
# Log-uniform density change per class: from barely visible to obvious.
CONTRAST = {"opacity": (0.05, 0.45), "nodule": (0.06, 0.4), "effusion": (0.12, 0.6), "pneumothorax": (0.02, 0.1)}


@dataclasses.dataclass(frozen=True)
class PhantomV2:
    """One rendered v2 phantom. `boxes` rows are (x_min, y_min, x_max, y_max) in pixel edges, one per
    lesion, in the order of `lesion_classes`: the box of all the lesion changed, even where a smaller
    lesion on top of it holds the label; lesion i's labelled pixels are `lesion_labels == i + 1`."""

    image: np.ndarray  # float32 (H, W) in [0, 1], bright = dense
    twin: np.ndarray  # the same person without disease; equal to `image` where lesion_labels == 0
    anatomy: np.ndarray  # uint8 (H, W), twinray.shared.data.anatomy indices, of the healthy person
    lung_field: np.ndarray  # bool (H, W): both lung fields, behind the heart too
    lesion_labels: np.ndarray  # uint8 (H, W): 0 = no lesion, i + 1 = lesion i (where lesions overlap, the smaller)
    lesion_classes: np.ndarray  # int8 (N,), indices of PATHOLOGIES
    boxes: np.ndarray  # float32 (N, 4)
    view: str
    person_seed: int
    lesion_seed: int | None
    spacing_mm: float

    @property
    def lesion_mask(self) -> np.ndarray:
        return self.lesion_labels > 0


def _person_rng(person_seed: int) -> np.random.Generator:
    # v1 spawns children 0 (geometry) and 1 (noise) of the person's seed; v2's own draws are child 2.
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(person_seed).spawn(3)[2]))


def _disease_plan(rng: np.random.Generator) -> list[tuple[int, float]]:
    """(pathology index, contrast) per lesion: one class, sometimes two, counts fitted per class."""
    names = list(CLASS_MIX)
    first = int(rng.choice(len(names), p=list(CLASS_MIX.values())))
    classes = [first]
    if rng.random() < SECOND_CLASS:
        others = [i for i in range(len(names)) if i != first]
        weights = np.array([CLASS_MIX[names[i]] for i in others])
        classes.append(int(rng.choice(others, p=weights / weights.sum())))
    plan = []
    for index in classes:
        name = names[index]
        count = int(rng.choice(len(FIT.opacities_per_image), p=FIT.opacities_per_image)) + 1 if name == "opacity" else 1
        plan += [(PATHOLOGIES.index(name), _log_uniform(rng, *CONTRAST[name])) for _ in range(count)]
    return plan[:MAX_LESIONS]


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _draw_disease(canvas: Canvas, lesion_seed: int, exposed: np.ndarray) -> tuple[list[np.ndarray], list[int]]:
    """The density change, inside the exposed field, of every lesion of `lesion_seed` that fits this
    person, and its class. An abnormal phantom always has a lesion: a plan of which nothing fits is
    followed by the seed's next plan (up to 8)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(lesion_seed)))
    changes, classes = [], []
    for _ in range(8):
        for pathology, contrast in _disease_plan(rng):
            change = DRAWERS[pathology](rng, canvas, contrast)
            if change is not None and np.any(change := change * exposed):
                changes.append(change)
                classes.append(pathology)
        if changes:
            break
    return changes, classes


def _label(changes: list[np.ndarray], marker: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lesion label map (larger lesions painted first, so a small one on top stays visible) and
    each lesion's box from its OWN support, whatever overlaps it."""
    supports = [(change != 0) & ~marker for change in changes]
    labels = np.zeros(marker.shape, np.uint8)
    for index in sorted(range(len(changes)), key=lambda i: -int(supports[i].sum())):
        labels[supports[index]] = index + 1
    boxes = []
    for support in supports:
        rows, cols = np.nonzero(support)
        boxes.append((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
    return labels, np.asarray(boxes, np.float32).reshape(-1, 4)


def render_phantom_v2(person_seed: int, size: int = 256, *, lesion_seed: int | None = None, view: str | None = None) -> PhantomV2:
    """Render person `person_seed` at `size` x `size`, healthy or with the disease of `lesion_seed`,
    in `view` ("PA" or "AP"; drawn with the real AP share when None). Same arguments -> same arrays."""
    if not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InvalidInput(f"phantom size must be an integer in {MIN_SIZE}..{MAX_SIZE}, got {size!r}")
    if person_seed < 0 or (lesion_seed is not None and lesion_seed < 0):
        raise InvalidInput(f"phantom seeds must be >= 0, got person {person_seed}, lesion {lesion_seed}")
    if view is not None and view not in VIEWS:
        raise InvalidInput(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    person, rng = draw_person(person_seed), _person_rng(person_seed)
    drawn_view = VIEWS[int(rng.random() < FIT.ap_share)]
    view = view or drawn_view
    params = confounders.view_adjusted(person.params, view, rng)
    params = dataclasses.replace(
        params,
        zoom=params.zoom * FIT.framing.draw(rng),
        shift_y=params.shift_y + FRAMING_SHIFT_Y,
        k=params.k * float(rng.uniform(0.85, 1.2)),
        d_vessel=params.d_vessel * float(rng.uniform(0.7, 1.6)),
    )
    canvas = healthy_canvas(params, person.vessels, size)
    density = canvas.density + confounders.devices(rng, canvas, view) + confounders.soft_tissue(rng, canvas, view)
    scatter = confounders.scatter_fraction(rng)
    exposed = confounders.collimation(rng, size)
    marker = confounders.side_marker(rng, size)

    c = canvas.c
    background = params.bg_amp * smooth_field(person.background, c, c, 0.5) + params.heel * c[:, None]
    noise = np.random.Generator(np.random.PCG64(person.noise_seed)).standard_normal((size, size), np.float32)
    twin = expose(params, density, background, noise)
    changes, classes = _draw_disease(canvas, lesion_seed, exposed) if lesion_seed is not None else ([], [])
    kept = [i for i, change in enumerate(changes) if np.any((change != 0) & ~marker)]
    changes, classes = [changes[i] for i in kept], [classes[i] for i in kept]
    labels, boxes = _label(changes, marker)
    total = sum(changes, np.zeros_like(density))
    image = twin.copy()
    changed = total != 0
    image[changed] = expose(params, density[changed] + total[changed], background[changed], noise[changed])
    veil = scatter * confounders.veil(twin)
    twin, image = (1.0 - scatter) * twin + veil, (1.0 - scatter) * image + veil
    unexposed = 0.92 + 0.01 * noise[~exposed]
    twin[~exposed], image[~exposed] = unexposed, unexposed
    twin[marker], image[marker] = 0.98, 0.98
    return PhantomV2(
        image=np.clip(image, 0.0, 1.0).astype(np.float32),
        twin=np.clip(twin, 0.0, 1.0).astype(np.float32),
        anatomy=canvas.anatomy,
        lung_field=canvas.any_lung(),
        lesion_labels=labels,
        lesion_classes=np.array(classes, np.int8),
        boxes=boxes,
        view=view,
        person_seed=int(person_seed),
        lesion_seed=None if lesion_seed is None else int(lesion_seed),
        spacing_mm=FIELD_OF_VIEW_MM / size,
    )

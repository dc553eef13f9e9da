"""What `cxr-phantom/2` draws disease and confounders on: one person's healthy maps at the output size.

The person's geometry and healthy density come from `cxr-phantom/1` (twinray.shared.data.phantoms.cxr),
rendered in row blocks as there; this module keeps the maps that v2's pathologies need (the lung
fields including the retrocardiac part, how deep each pixel is inside its hemithorax, the lung markings).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from twinray.shared.data.phantoms import cxr
from twinray.shared.data.phantoms.cxr import PersonParameters


@dataclasses.dataclass(frozen=True)
class Canvas:
    """Healthy maps of one person at `size` x `size`. Coordinates `c` are pixel centres in [-1, 1]
    (image x to the right, y down); `x`, `y` are every pixel's person coordinates."""

    params: PersonParameters
    c: np.ndarray  # (S,) float32
    x: np.ndarray  # (S, S) float32
    y: np.ndarray  # (S, S) float32
    anatomy: np.ndarray  # uint8 (S, S), twinray.shared.data.anatomy indices
    density: np.ndarray  # float32 (S, S): healthy projected density, lung markings included
    markings: np.ndarray  # float32 (S, S): the lung markings' share of `density`
    lung_field: np.ndarray  # bool (S, S, 2): the right and left lung fields, behind the heart too
    wall: np.ndarray  # float32 (S, S, 2): signed depth to the right / left chest wall (< 0 inside)

    @property
    def size(self) -> int:
        return len(self.c)

    @property
    def pixel(self) -> float:
        """The width of one pixel in image coordinates."""
        return 2.0 / self.size

    def any_lung(self) -> np.ndarray:
        return self.lung_field.any(axis=2)


def healthy_canvas(params: PersonParameters, vessel_grid: np.ndarray, size: int) -> Canvas:
    """Render the healthy maps of the person with `params` (vessel texture from `vessel_grid`)."""
    c, x, y = cxr.person_grid(params, size)
    vessels = cxr.smooth_field(vessel_grid, c, c, 0.03 * params.zoom)
    no_vessels = np.zeros_like(vessels)
    anatomy = np.empty((size, size), np.uint8)
    density, markings = (np.empty((size, size), np.float32) for _ in range(2))
    lung_field, wall = np.empty((size, size, 2), bool), np.empty((size, size, 2), np.float32)
    eps = max(0.012, 3.0 / size)
    step = max(1, 16384 // size)
    for r in range(0, size, step):
        block = slice(r, r + step)
        fields = cxr.person_fields(params, x[block], y[block])
        anatomy[block] = cxr.anatomy_labels(fields)
        density[block] = cxr.healthy_density(params, fields, vessels[block], eps)
        markings[block] = density[block] - cxr.healthy_density(params, fields, no_vessels[block], eps)
        for side, name in enumerate(("r", "l")):
            lung_field[block, :, side] = (fields[f"lung_{name}"] < 0) & (fields["body"] < 0)
            wall[block, :, side] = fields[f"egg_{name}"]
    return Canvas(params, c, x, y, anatomy, density, markings, lung_field, wall)

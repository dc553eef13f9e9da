"""Measure `cxr-phantom/2` phantoms the way twinray.shared.data.real_tables measured the real tables,
and compare: the statistics test and the fitting of calibration's scales both use this.

`python -m twinray.shared.data.phantoms.calibration_check [count [seed]]` prints real vs phantom quartiles.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from twinray.shared.data import anatomy as A
from twinray.shared.data.phantoms.calibration import KEYS, LEVELS
from twinray.shared.data.phantoms.cxr_v2 import PhantomV2, render_phantom_v2
from twinray.shared.data.phantoms.pathologies import EFFUSION, NODULE, OPACITY, PNEUMOTHORAX
from twinray.shared.data.real_statistics import stored_real_statistics


def _quantiles(values: Sequence[float]) -> dict[str, float]:
    return dict(zip(KEYS, (float(v) for v in np.quantile(np.asarray(values, float), LEVELS)))) if len(values) else {}


def _boxes(phantoms: Sequence[PhantomV2], pathology: int) -> np.ndarray:
    """(x0, y0, x1, y1) fractions of every lesion of class `pathology`."""
    rows = [ph.boxes[i] / len(ph.image) for ph in phantoms for i, c in enumerate(ph.lesion_classes) if c == pathology]
    return np.asarray(rows, float).reshape(-1, 4)


def phantom_statistics(phantoms: Sequence[PhantomV2]) -> dict[str, dict[str, dict[str, float]]]:
    """The phantoms' counterparts of the real statistics the generator is fitted on (same keys)."""
    lungs = [np.isin(ph.anatomy, A.LUNGS) for ph in phantoms]  # the healthy person's anatomy, abnormal or not
    extents = []
    for lung in lungs:
        rows, cols = np.nonzero(lung)
        extents.append((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1, lung.mean()))
    extents_ = np.asarray(extents, float) / np.array([len(lungs[0])] * 4 + [1.0])
    opacity, nodule, effusion = (_boxes(phantoms, c) for c in (OPACITY, NODULE, EFFUSION))
    centre = lambda boxes, axis: (boxes[:, axis] + boxes[:, axis + 2]) / 2  # noqa: E731
    pneumothorax = [(ph.lesion_labels == i + 1) for ph in phantoms for i, c in enumerate(ph.lesion_classes) if c == PNEUMOTHORAX]
    ptx_box = _boxes(phantoms, PNEUMOTHORAX)
    return {
        "v7labs_lungs": {
            "area": _quantiles(extents_[:, 4]),
            "bbox_y0": _quantiles(extents_[:, 1]),
            "bbox_y1": _quantiles(extents_[:, 3]),
            "bbox_x0": _quantiles(extents_[:, 0]),
            "bbox_x1": _quantiles(extents_[:, 2]),
        },
        "rsna_labels": {
            "box_width": _quantiles(opacity[:, 2] - opacity[:, 0]),
            "box_height": _quantiles(opacity[:, 3] - opacity[:, 1]),
            "box_centre_x_mirrored": _quantiles(np.minimum(centre(opacity, 0), 1 - centre(opacity, 0))),
            "box_centre_y": _quantiles(centre(opacity, 1)),
        },
        "nih_nodule_and_mass": {"width": _quantiles(nodule[:, 2] - nodule[:, 0]), "centre_y": _quantiles(centre(nodule, 1))},
        "nih_effusion": {
            "height": _quantiles(effusion[:, 3] - effusion[:, 1]),
            "width": _quantiles(effusion[:, 2] - effusion[:, 0]),
        },
        "siim_pneumothorax": {
            "mask_area": _quantiles([mask.mean() for mask in pneumothorax]),
            "bbox_width": _quantiles(ptx_box[:, 2] - ptx_box[:, 0]),
            "bbox_height": _quantiles(ptx_box[:, 3] - ptx_box[:, 1]),
            "centroid_y": _quantiles([np.nonzero(mask)[0].mean() / len(mask) for mask in pneumothorax]),
        },
    }


def real_counterparts() -> dict[str, dict[str, dict[str, float]]]:
    """The real statistics under the keys of `phantom_statistics` (nodules and masses pooled by count)."""
    real = stored_real_statistics()
    nih = real["nih_boxes"]["findings"]
    nodule, mass = nih["Nodule"], nih["Mass"]
    pooled = {
        key: (nodule["width"][key] * nodule["count"] + mass["width"][key] * mass["count"]) / (nodule["count"] + mass["count"])
        for key in KEYS
    }
    ptx = real["siim_pneumothorax"]
    return {
        "v7labs_lungs": {key: real["v7labs_lungs"][key] for key in ("area", "bbox_y0", "bbox_y1", "bbox_x0", "bbox_x1")},
        "rsna_labels": {
            key: real["rsna_labels"][key] for key in ("box_width", "box_height", "box_centre_x_mirrored", "box_centre_y")
        },
        "nih_nodule_and_mass": {"width": pooled, "centre_y": nodule["centre_y"]},
        "nih_effusion": {key: nih["Effusion"][key] for key in ("height", "width")},
        "siim_pneumothorax": {key: ptx[key] for key in ("mask_area", "bbox_width", "bbox_height", "centroid_y")},
    }


def sample(count: int, size: int = 128, seed: int = 0) -> list[PhantomV2]:
    """`count` abnormal phantoms of persons and diseases drawn from `seed`."""
    return [render_phantom_v2(10_000 * seed + i, size, lesion_seed=10_000 * seed + i + 5_000) for i in range(count)]


if __name__ == "__main__":
    phantoms = sample(int(sys.argv[1]) if len(sys.argv) > 1 else 200, seed=int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    ours, real = phantom_statistics(phantoms), real_counterparts()
    for table, metrics in real.items():
        for metric, quantiles in metrics.items():
            mine = ours[table][metric]
            print(
                f"{table:22s} {metric:22s} real q25/q50/q75 {quantiles['q25']:.3f} {quantiles['q50']:.3f} {quantiles['q75']:.3f}"
                f"   phantom {mine.get('q25', float('nan')):.3f} {mine.get('q50', float('nan')):.3f} {mine.get('q75', float('nan')):.3f}"
            )

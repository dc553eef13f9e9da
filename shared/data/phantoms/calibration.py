"""The fitted distributions of `cxr-phantom/2`, each from a real annotation table.

The real statistics are computed from the tables `torchxrayvision` ships (RSNA pneumonia labels and
DICOM headers, SIIM pneumothorax masks, NIH ChestX-ray14 boxes, v7labs lung masks) by
twinray.shared.data.real_tables and stored in shared/data/real_statistics.json. A distribution here is
the real quantiles (piecewise-linear inverse CDF), times a scale fitted so that what the phantom
RENDERS (its lesion masks' boxes, not the drawn parameters) matches the real table; the statistics
test (tests/unit/shared/data/phantoms/test_calibration.py) holds the two together.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from twinray.shared.data.real_statistics import stored_real_statistics

LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)
KEYS = ("q05", "q25", "q50", "q75", "q95")  # their names in real_statistics.json


@dataclasses.dataclass(frozen=True)
class Quantiles:
    """A distribution given by its 5/25/50/75/95 % quantiles; tails extended linearly to 0 and 1."""

    values: tuple[float, float, float, float, float]
    scale: float = 1.0
    low: float = 0.0  # draws are clipped to [low, high]
    high: float = 1.0

    def draw(self, rng: np.random.Generator) -> float:
        q = np.asarray(self.values, float) * self.scale
        knots = np.concatenate([[q[0] - (q[1] - q[0]) / 4], q, [q[4] + (q[4] - q[3]) / 4]])
        return float(np.clip(np.interp(rng.uniform(), (0.0, *LEVELS, 1.0), knots), self.low, self.high))


def _quantiles(table: dict, scale: float = 1.0, low: float = 0.0, high: float = 1.0) -> Quantiles:
    return Quantiles(tuple(float(table[key]) for key in KEYS), scale, low, high)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class Fit:
    """Every fitted distribution of the generator; geometry in fractions of the image side, x mirrored
    onto the image-left half (the patient's right lung) and drawn for either side."""

    ap_share: float  # of all films, for a person rendered without a planned view
    ap_share_abnormal: float
    ap_share_normal: float
    framing: Quantiles  # zoom of the person on the detector, so the lung fields fill the film as real ones do
    opacities_per_image: tuple[float, ...]  # P(1), P(2), ... boxes per positive RSNA image
    opacity_left_share: float  # share of opacities in the patient's left lung (image right)
    opacity_width: Quantiles
    opacity_height: Quantiles
    opacity_centre_x: Quantiles
    opacity_centre_y: Quantiles
    mass_share: float  # of the nodule class, the share that are masses
    nodule_diameter: Quantiles
    mass_diameter: Quantiles
    nodule_centre_x: Quantiles
    nodule_centre_y: Quantiles
    effusion_height: Quantiles  # fluid height, as a share of the lung field's height
    pneumothorax_left_share: float
    pneumothorax_extent: Quantiles  # how far down from the apex, as a share of the lung field's height
    pneumothorax_gap: Quantiles  # the air rim's width at its widest


def _fit() -> Fit:
    real = stored_real_statistics()
    rsna, headers, siim = real["rsna_labels"], real["rsna_headers"], real["siim_pneumothorax"]
    nih, lungs = real["nih_boxes"]["findings"], real["v7labs_lungs"]
    lung_height = lungs["bbox_y1"]["q50"] - lungs["bbox_y0"]["q50"]
    per_image = rsna["boxes_per_positive_image"]
    counts = np.array([per_image[str(n)] for n in range(1, len(per_image) + 1)])
    nodules, masses = nih["Nodule"], nih["Mass"]
    return Fit(
        ap_share=headers["ap_share"],
        ap_share_abnormal=headers["ap_share_positive"],
        ap_share_normal=headers["ap_share_negative"],
        # Lung area grows with the square of the zoom: the real area spread, centred on the zoom at
        # which the phantom's median lung field is as tall as the real one (fitted: FRAMING_SCALE).
        framing=Quantiles(tuple(float(np.sqrt(lungs["area"][k] / lungs["area"]["q50"])) for k in KEYS), FRAMING_SCALE, 0.8, 1.6),
        opacities_per_image=tuple(float(v) for v in counts / counts.sum()),
        opacity_left_share=1.0 - rsna["box_centre_image_left_share"],
        opacity_width=_quantiles(rsna["box_width"], OPACITY_SCALE),
        opacity_height=_quantiles(rsna["box_height"], OPACITY_SCALE),
        opacity_centre_x=_quantiles(rsna["box_centre_x_mirrored"]),
        opacity_centre_y=_quantiles(rsna["box_centre_y"]),
        mass_share=masses["count"] / (masses["count"] + nodules["count"]),
        nodule_diameter=_quantiles(nodules["width"], NODULE_SCALE),
        mass_diameter=_quantiles(masses["width"], NODULE_SCALE),
        nodule_centre_x=_quantiles(nodules["centre_x_mirrored"]),
        nodule_centre_y=_quantiles(nodules["centre_y"]),
        effusion_height=_quantiles(nih["Effusion"]["height"], EFFUSION_SCALE / lung_height),
        pneumothorax_left_share=1.0 - siim["centroid_image_left_share"],
        pneumothorax_extent=_quantiles(siim["bbox_height"], PNEUMOTHORAX_EXTENT_SCALE / lung_height),
        pneumothorax_gap=_quantiles(siim["bbox_width"], PNEUMOTHORAX_GAP_SCALE),
    )


# How far what is drawn must be scaled for what is RENDERED to match the real tables (a lesion's
# visible extent is smaller than its drawn box: thresholds, confinement to the lungs), fitted by
# `python -m twinray.shared.data.phantoms.calibration_check`.
FRAMING_SCALE = 1.15
FRAMING_SHIFT_Y = 0.08  # image coordinates: the real lung fields sit lower on the film
OPACITY_SCALE = 1.3
NODULE_SCALE = 1.0
EFFUSION_SCALE = 0.85
PNEUMOTHORAX_EXTENT_SCALE = 1.0
PNEUMOTHORAX_GAP_SCALE = 0.07
FIT = _fit()

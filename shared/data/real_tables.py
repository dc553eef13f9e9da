"""Statistics of the REAL chest X-ray annotation tables shipped as package data of torchxrayvision==1.5.7.

No real images can be downloaded here, but torchxrayvision carries the annotation tables of several
public sets in `torchxrayvision/data/`. The CXR phantoms ("cxr-phantom/2") are calibrated on the numbers
computed here, and a test compares the phantoms' statistics with them. The files are located through
the package's metadata: torchxrayvision itself is never imported (importing it loads models).

All geometry is NORMALISED to fractions of the image width (x) and height (y), origin at the top left:
RSNA, SIIM and NIH images are 1024 x 1024; each v7labs mask is measured in its own size. "Image-left"
is the PATIENT's right on a frontal film (see twinray.shared.data.anatomy).

Tables (one function each, each returning plain Python numbers):
    rsna_label_statistics      RSNA pneumonia stage-2 train labels (boxes)
    rsna_header_statistics     RSNA stage-2 DICOM header table (view, spacing, age, sex)
    siim_statistics            SIIM-ACR pneumothorax masks (Kaggle RLE)
    nih_box_statistics         NIH ChestX-ray14 boxes (8 findings)
    v7labs_lung_statistics     v7labs lung masks
    real_statistics            all of them (twinray.shared.data.real_statistics reads the committed copy)

`python -m twinray.shared.data.real_tables` prints `real_statistics()` as JSON; its output, rounded with
`round_significant`, is committed as real_statistics.json next to this module.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import math
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from twinray.shared.data.rsna import SIDE  # RSNA, SIIM and NIH films are all 1024 x 1024 pixels

PACKAGE = "torchxrayvision"
PACKAGE_VERSION = "1.5.7"
INSTALL_HINT = f"pip install {PACKAGE}=={PACKAGE_VERSION}"

RSNA_LABELS = "kaggle_stage_2_train_labels.csv.zip"
RSNA_HEADERS = "kaggle_stage_2_train_images_dicom_headers.csv.gz"
SIIM_RLE = "siim-pneumothorax-train-rle.csv.gz"
NIH_BOXES = "BBox_List_2017.csv.gz"
V7LABS_LUNGS = "semantic_masks_v7labs_lungs.zip"

QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)
MAX_PLAUSIBLE_AGE = 120  # the RSNA headers hold a few ages of 148..155 years
LUNG_THRESHOLD = 127  # v7labs masks: 255 = lung, 0 = background, 127 = arrows/markers burned in from the source figure


def data_file(name: str) -> Path:
    """The path of one of torchxrayvision's data files, located without importing the package (import loads models)."""
    try:
        path = Path(str(importlib.metadata.distribution(PACKAGE).locate_file(f"{PACKAGE}/data/{name}")))
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(f"the real annotation tables need {PACKAGE}'s package data; install it: {INSTALL_HINT}") from None
    if not path.is_file():
        raise RuntimeError(
            f"{PACKAGE} is installed but lacks data/{name}; install the version these statistics were made on: {INSTALL_HINT}"
        )
    return path


def package_version() -> str:
    """The installed torchxrayvision version, recorded beside the statistics so a mismatch is visible."""
    return importlib.metadata.version(PACKAGE)


def mirrored(x: pd.Series | np.ndarray) -> np.ndarray:
    """x folded onto the image-left half (x for the patient's right lung, 1 - x for the left): one lateral distribution for both."""
    x = np.asarray(x, float)
    return np.minimum(x, 1.0 - x)


def quantiles(values: Iterable[float] | np.ndarray) -> dict[str, float]:
    """The QUANTILES of `values` (linear interpolation) as {"q05": .., "q25": .., "q50": .., "q75": .., "q95": ..}."""
    array = np.asarray(values, dtype=np.float64)
    return {f"q{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, np.quantile(array, QUANTILES))}


def shares(counts: pd.Series) -> dict[str, float]:
    """Value counts as shares of the total, keyed by str(value) so they survive a JSON round trip."""
    total = int(counts.sum())
    return {str(key): int(n) / total for key, n in sorted(counts.items())}


def round_significant(value: Any, digits: int = 4) -> Any:
    """Rounds every float inside nested dicts/lists to `digits` significant digits; ints (counts) stay exact."""
    if isinstance(value, dict):
        return {key: round_significant(item, digits) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [round_significant(item, digits) for item in value]
    if isinstance(value, float) and value != 0.0 and math.isfinite(value):
        return round(value, digits - 1 - math.floor(math.log10(abs(value))))
    return value


# --- (a) RSNA pneumonia labels -------------------------------------------------------------------------------


def read_rsna_labels() -> pd.DataFrame:
    """The RSNA stage-2 train labels: one row per box (positive) or per image (negative, NaN box)."""
    return pd.read_csv(data_file(RSNA_LABELS))


def rsna_label_statistics(labels: pd.DataFrame | None = None) -> dict[str, Any]:
    """How many pneumonia boxes an image has, how big they are and where they lie: the phantom's lesion prior."""
    labels = read_rsna_labels() if labels is None else labels
    per_image = labels.groupby("patientId")["Target"].max()
    boxes = labels[labels["Target"] == 1].copy()
    boxes["cx"] = (boxes["x"] + boxes["width"] / 2) / SIDE
    boxes["cy"] = (boxes["y"] + boxes["height"] / 2) / SIDE
    boxes["image_left"] = boxes["cx"] < 0.5
    lungs_hit = boxes.groupby("patientId")["image_left"].nunique()  # 1: one side only, 2: both lungs
    return {
        "rows": len(labels),
        "images": int(per_image.size),
        "positive_images": int(per_image.sum()),
        "positive_image_share": float(per_image.mean()),
        "boxes": len(boxes),
        "boxes_per_positive_image": shares(boxes.groupby("patientId").size().value_counts()),
        "box_width": quantiles(boxes["width"] / SIDE),
        "box_height": quantiles(boxes["height"] / SIDE),
        "box_area": quantiles(boxes["width"] * boxes["height"] / SIDE**2),
        "box_centre_x": quantiles(boxes["cx"]),
        "box_centre_x_mirrored": quantiles(mirrored(boxes["cx"])),
        "box_centre_y": quantiles(boxes["cy"]),
        "box_centre_image_left_share": float(boxes["image_left"].mean()),
        "lungs_hit_per_positive_image_mean": float(lungs_hit.mean()),
        "lungs_hit_per_positive_image": quantiles(lungs_hit),
        "both_lungs_hit_share": float((lungs_hit == 2).mean()),
    }


# --- (b) RSNA DICOM headers ----------------------------------------------------------------------------------


def read_rsna_headers() -> pd.DataFrame:
    """The RSNA stage-2 DICOM header table, one row per image, columns named like DICOM keywords (PatientID, ViewPosition...)."""
    return pd.read_csv(data_file(RSNA_HEADERS), index_col=0)


def rsna_header_statistics(headers: pd.DataFrame | None = None, labels: pd.DataFrame | None = None) -> dict[str, Any]:
    """View position (AP vs PA, and how it goes with pneumonia), pixel spacing, age and sex: the phantom's acquisition prior."""
    headers = read_rsna_headers() if headers is None else headers
    labels = read_rsna_labels() if labels is None else labels
    positive = labels.groupby("patientId")["Target"].max().rename("positive")
    joined = headers.join(positive, on="PatientID", how="inner")
    is_ap = joined["ViewPosition"] == "AP"
    ages = joined["PatientAge"]
    plausible_ages = ages[ages <= MAX_PLAUSIBLE_AGE]
    return {
        "images": len(headers),
        "joined_images": len(joined),
        "view_position_counts": {str(view): int(n) for view, n in headers["ViewPosition"].value_counts().sort_index().items()},
        "ap_share": float(is_ap.mean()),
        "ap_share_positive": float(is_ap[joined["positive"] == 1].mean()),
        "ap_share_negative": float(is_ap[joined["positive"] == 0].mean()),
        "positive_share_ap": float(joined.loc[is_ap, "positive"].mean()),
        "positive_share_pa": float(joined.loc[~is_ap, "positive"].mean()),
        "pixel_spacing_mm": quantiles(joined["PixelSpacing"]),
        "age_years": quantiles(plausible_ages),
        "ages_dropped_over_120": int((ages > MAX_PLAUSIBLE_AGE).sum()),
        "male_share": float((joined["PatientSex"] == "M").mean()),
        "modality_counts": {str(m): int(n) for m, n in headers["Modality"].value_counts().items()},
    }


# --- (c) SIIM-ACR pneumothorax RLE ---------------------------------------------------------------------------


def read_siim() -> pd.DataFrame:
    """The SIIM pneumothorax RLE table as columns ImageId, rle ("-1" = no pneumothorax; several rows = several components)."""
    table = pd.read_csv(data_file(SIIM_RLE))
    table.columns = ["ImageId", "rle"]  # the file's header is "ImageId, EncodedPixels" (with a space)
    table["rle"] = table["rle"].str.strip()
    return table


def decode_siim_runs(rle: str, side: int = SIDE) -> tuple[np.ndarray, np.ndarray]:
    """Absolute run starts and lengths from Kaggle's RELATIVE RLE ("gap length gap length ..."): each gap counts from the
    end of the previous run. The flat index runs down COLUMNS (the mask is transposed): pixel (x, y) = index // side,
    index % side. Runs that cross a column boundary are split so every run lies in one column."""
    numbers = np.array(rle.split(), dtype=np.int64)
    if numbers.size == 0 or numbers.size % 2 or (numbers < 0).any():
        raise ValueError(f"not a SIIM relative RLE (pairs of non-negative numbers): {rle[:60]!r}")
    gaps, lengths = numbers[0::2], numbers[1::2]
    starts = np.cumsum(gaps) + np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ends = starts + lengths
    if ends[-1] > side * side:
        raise ValueError(f"SIIM run ends at {ends[-1]}, beyond a {side}x{side} image")
    if ((starts // side) == ((ends - 1) // side)).all():
        return starts, lengths
    pieces = []
    for start, end in zip(starts.tolist(), ends.tolist()):
        while start < end:
            stop = min(end, (start // side + 1) * side)
            pieces.append((start, stop - start))
            start = stop
    split = np.array(pieces, dtype=np.int64)
    return split[:, 0], split[:, 1]


def merge_runs(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The union of runs as disjoint sorted runs: an image's components may overlap (several readers outlined one lesion).
    Overlapping runs merge; runs that only touch stay apart, so no merged run crosses into the next column."""
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], starts[order] + lengths[order]
    reach = np.maximum.accumulate(ends)
    new = np.concatenate([[True], starts[1:] >= reach[:-1]])  # a run opens a new block unless it overlaps one before it
    merged_starts = starts[new]
    merged_ends = np.maximum.reduceat(ends, np.flatnonzero(new))
    return merged_starts, merged_ends - merged_starts


def runs_geometry(starts: np.ndarray, lengths: np.ndarray, side: int = SIDE) -> dict[str, float]:
    """Area, bounding box and centroid (fractions of the image) of disjoint column-major runs, without building the mask."""
    x = starts // side
    y0 = starts % side
    area = int(lengths.sum())
    # Pixels y0 .. y0+len-1 of column x: their y sum is len * (y0 + (len-1)/2); +0.5 puts coordinates at pixel centres.
    cx = float((lengths * (x + 0.5)).sum() / area / side)
    cy = float((lengths * (y0 + lengths / 2)).sum() / area / side)
    return {
        "area": area / side**2,
        "x0": int(x.min()) / side,
        "x1": (int(x.max()) + 1) / side,
        "y0": int(y0.min()) / side,
        "y1": int((y0 + lengths).max()) / side,
        "cx": cx,
        "cy": cy,
    }


def siim_mask(rles: Sequence[str], side: int = SIDE) -> np.ndarray:
    """One image's pneumothorax mask (rows = y, columns = x) from its RLE rows: for tests and pictures, not for statistics."""
    flat = np.zeros(side * side, dtype=bool)
    for rle in rles:
        if rle != "-1":
            for start, length in zip(*decode_siim_runs(rle, side)):
                flat[start : start + length] = True
    return flat.reshape(side, side).T  # column-major: reshaped rows are x, so transpose to (y, x)


def siim_image_geometry(table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per positive SIIM image: components and the union mask's area, bounding box and centroid (fractions)."""
    table = read_siim() if table is None else table
    rows = []
    for image_id, rles in table[table["rle"] != "-1"].groupby("ImageId")["rle"]:
        runs = [decode_siim_runs(rle) for rle in rles]
        starts, lengths = merge_runs(np.concatenate([s for s, _ in runs]), np.concatenate([n for _, n in runs]))
        component_area = sum(int(n.sum()) for _, n in runs) / SIDE**2
        rows.append(
            {"ImageId": image_id, "components": len(runs), "component_area_sum": component_area, **runs_geometry(starts, lengths)}
        )
    return pd.DataFrame(rows).set_index("ImageId")


def siim_statistics(table: pd.DataFrame | None = None) -> dict[str, Any]:
    """How common, how large and where pneumothoraces are (apical, lateral, one side): the phantom's pneumothorax prior."""
    table = read_siim() if table is None else table
    positive = (table["rle"] != "-1").groupby(table["ImageId"]).any()
    geometry = siim_image_geometry(table)
    return {
        "rows": len(table),
        "images": int(positive.size),
        "positive_images": int(positive.sum()),
        "positive_image_share": float(positive.mean()),
        "components_per_positive_image": shares(geometry["components"].value_counts()),
        "overlapping_component_image_share": float((geometry["component_area_sum"] > geometry["area"]).mean()),
        "mask_area": quantiles(geometry["area"]),
        "bbox_width": quantiles(geometry["x1"] - geometry["x0"]),
        "bbox_height": quantiles(geometry["y1"] - geometry["y0"]),
        "centroid_x": quantiles(geometry["cx"]),
        "centroid_x_mirrored": quantiles(mirrored(geometry["cx"])),
        "centroid_y": quantiles(geometry["cy"]),
        "centroid_upper_half_share": float((geometry["cy"] < 0.5).mean()),
        "centroid_image_left_share": float((geometry["cx"] < 0.5).mean()),
        "centroid_lateral_distance_mean": float((geometry["cx"] - 0.5).abs().mean()),
        "centroid_lateral_distance": quantiles((geometry["cx"] - 0.5).abs()),
    }


# --- (d) NIH ChestX-ray14 boxes ------------------------------------------------------------------------------


def read_nih_boxes() -> pd.DataFrame:
    """The NIH boxes as columns image, finding, x, y, w, h (pixels of a 1024 x 1024 image)."""
    table = pd.read_csv(data_file(NIH_BOXES))
    # The header is "Image Index,Finding Label,Bbox [x,y,w,h],,,": the box columns are "Bbox [x", "y", "w", "h]" and three
    # empty trailing columns; take the first six by position.
    table = table.iloc[:, :6]
    table.columns = ["image", "finding", "x", "y", "w", "h"]
    return table


def nih_box_statistics(table: pd.DataFrame | None = None) -> dict[str, Any]:
    """Box size and position per finding: where a phantom should put a nodule, a mass, an effusion..."""
    table = read_nih_boxes() if table is None else table
    by_finding = {}
    for finding, boxes in sorted(table.groupby("finding")):
        by_finding[str(finding)] = {
            "count": len(boxes),
            "width": quantiles(boxes["w"] / SIDE),
            "height": quantiles(boxes["h"] / SIDE),
            "centre_x": quantiles((boxes["x"] + boxes["w"] / 2) / SIDE),
            "centre_x_mirrored": quantiles(mirrored((boxes["x"] + boxes["w"] / 2) / SIDE)),
            "centre_y": quantiles((boxes["y"] + boxes["h"] / 2) / SIDE),
        }
    return {"boxes": len(table), "images": int(table["image"].nunique()), "findings": by_finding}


# --- (e) v7labs lung masks -----------------------------------------------------------------------------------


def read_v7labs_masks() -> Iterable[tuple[str, np.ndarray]]:
    """Yields (file name, grey mask) for each of the v7labs lung masks, in the zip's order."""
    with zipfile.ZipFile(data_file(V7LABS_LUNGS)) as archive:
        for name in archive.namelist():
            if not name.endswith("/"):
                with Image.open(io.BytesIO(archive.read(name))) as image:
                    yield name.rsplit("/", 1)[-1], np.asarray(image.convert("L"))


def lung_mask_geometry(mask: np.ndarray) -> dict[str, float] | None:
    """Area fraction, union box, height/width ratio and image-left/image-right lung area ratio of one lung mask (None if
    empty). The lungs are split at the mediastinal gap: the emptiest column in the middle 40% of the lung field's width."""
    lung = mask > LUNG_THRESHOLD
    columns, rows = np.count_nonzero(lung, axis=0), np.count_nonzero(lung, axis=1)
    if not columns.any():
        return None
    height, width = lung.shape
    x_on, y_on = np.flatnonzero(columns), np.flatnonzero(rows)
    x0, x1, y0, y1 = int(x_on[0]), int(x_on[-1]) + 1, int(y_on[0]), int(y_on[-1]) + 1
    band = slice(x0 + round(0.3 * (x1 - x0)), x0 + round(0.7 * (x1 - x0)) + 1)
    emptiest = np.flatnonzero(columns[band] == columns[band].min())
    split = band.start + int(emptiest[len(emptiest) // 2])  # the middle of the gap when it is several columns wide
    left, right = int(columns[:split].sum()), int(columns[split:].sum())
    return {
        "area": int(columns.sum()) / (height * width),
        "x0": x0 / width,
        "x1": x1 / width,
        "y0": y0 / height,
        "y1": y1 / height,
        "height_width_ratio": (y1 - y0) / (x1 - x0),  # in pixels
        "left_right_ratio": left / right if right else math.inf,
        "split_x": split / width,
        "split_column_share": int(columns[split]) / (y1 - y0),  # 0 where the two lungs are cleanly apart
    }


def v7labs_lung_statistics(masks: Iterable[tuple[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """How much of a (cropped, mostly COVID-era) frontal film the lungs fill, where, with what shape: the phantom's lung prior."""
    masks = read_v7labs_masks() if masks is None else masks
    rows, empty, marked = [], 0, 0
    for _, mask in masks:
        geometry = lung_mask_geometry(mask)
        marked += int(geometry is not None and np.count_nonzero(mask) > round(geometry["area"] * mask.size))
        if geometry is None:
            empty += 1
        else:
            rows.append(geometry)
    table = pd.DataFrame(rows)
    return {
        "masks": len(rows) + empty,
        "empty_masks": empty,
        "masks_with_marker_pixels": marked,
        "measured_masks": len(rows),
        "lung_side_split": "middle of the emptiest columns in the middle 40% of the lung field's width (the mediastinal gap)",
        "area": quantiles(table["area"]),
        "bbox_x0": quantiles(table["x0"]),
        "bbox_y0": quantiles(table["y0"]),
        "bbox_x1": quantiles(table["x1"]),
        "bbox_y1": quantiles(table["y1"]),
        "height_width_ratio": quantiles(table["height_width_ratio"]),
        "left_right_area_ratio": quantiles(table["left_right_ratio"]),
        "split_x": quantiles(table["split_x"]),
        "lungs_touching_share": float((table["split_column_share"] > 0).mean()),
        "one_sided_share": float(((table["left_right_ratio"] < 0.25) | (table["left_right_ratio"] > 4)).mean()),
    }


# --- (f) all together ----------------------------------------------------------------------------------------


def real_statistics() -> dict[str, Any]:
    """Every table's statistics in one dict (plain Python numbers), the calibration target of cxr-phantom/2."""
    labels = read_rsna_labels()
    return {
        "source": {
            "package": PACKAGE,
            "version": package_version(),
            "quantiles": list(QUANTILES),
            "geometry": "fractions of W, H",
        },
        "rsna_labels": rsna_label_statistics(labels),
        "rsna_headers": rsna_header_statistics(labels=labels),
        "siim_pneumothorax": siim_statistics(),
        "nih_boxes": nih_box_statistics(),
        "v7labs_lungs": v7labs_lung_statistics(),
    }


if __name__ == "__main__":
    print(json.dumps(round_significant(real_statistics()), indent=2, allow_nan=False))

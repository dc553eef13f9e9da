"""The real RSNA Pneumonia Detection Challenge data, in Kaggle's layout, for training and evaluating a detector.

Layout of a root folder DIR (as Kaggle ships stage 2):
    DIR/stage_2_train_labels.csv            patientId, x, y, width, height, Target: one row per box; a negative image
                                             has one row with Target 0 and empty x, y, width, height
    DIR/stage_2_train_images/<patientId>.dcm one DICOM per patient (1024 x 1024, 8-bit MONOCHROME2, JPEG baseline)

Box coordinates are pixels of the 1024 x 1024 originals. Boxes are returned in corner form (x1, y1, x2, y2) in pixel
edges, like the phantoms' boxes: x2 = x + width.

Sizes: a DICOM whose Rows x Columns is not 1024 x 1024 is taken as a resampled copy of the original, so its boxes are
scaled by Columns / 1024 (x) and Rows / 1024 (y); its PixelSpacing is taken as written (the header of a resampled copy
should carry its own spacing). With `size`, the image is stretched to size x size (bilinear, antialiased, the aspect
ratio not kept: twinray.shared.platform.imaging.to_model_input) and boxes and spacing follow the same per-axis factors,
so every item's boxes and spacing_mm describe the image it carries.

DICOMs are decoded by twinray.shared.platform.imaging.decode_dicom, the services' decoder (modality LUT, window,
MONOCHROME1 inversion, spacing). torchxrayvision's RSNA_Pneumonia_Dataset is NOT used: importing torchxrayvision loads
its models; it joins its own packaged DICOM header table and keeps only PA views by default; it assumes every labelled
image exists on disk; it reads raw stored values (pydicom's pixel_array, no modality LUT, window or MONOCHROME1) and
scales them by 255 into [-1024, 1024]; it gives per-pathology masks, not boxes; and it reseeds NumPy's global random
generator. The reader here is a few lines and validates the table.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twinray.shared.platform.errors import InvalidInput, NotFound, TwinRayError
from twinray.shared.platform.imaging import decode_dicom, to_model_input

SIDE = 1024  # RSNA images (and the other real tables' films) are 1024 x 1024 pixels
LABELS_FILE = "stage_2_train_labels.csv"
IMAGES_DIR = "stage_2_train_images"
COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
SPLITS = ("train", "val", "test")


def _number(text: str, column: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InvalidInput(f"{where}: {column} {text!r} is not a number; write pixels of the 1024 x 1024 image, e.g. 264.0")
    return value


def _box(texts: list[str], where: str) -> np.ndarray | None:
    """The corner-form box of a row's x, y, width, height (stripped), or None when all four are empty."""
    if not any(texts):
        return None
    if not all(texts):
        raise InvalidInput(f"{where}: x, y, width, height are partly empty; fill all four (a box) or none (a negative image)")
    x, y, width, height = (_number(text, column, where) for text, column in zip(texts, ("x", "y", "width", "height")))
    if x < 0 or y < 0:
        raise InvalidInput(f"{where}: x {x:g}, y {y:g} is negative; box corners are pixels from the top left, 0 or more")
    if width <= 0 or height <= 0:
        raise InvalidInput(f"{where}: width {width:g}, height {height:g} must both be above 0")
    if x + width > SIDE or y + height > SIDE:
        raise InvalidInput(f"{where}: the box reaches ({x + width:g}, {y + height:g}), beyond the {SIDE} x {SIDE} image")
    return np.array([x, y, x + width, y + height], dtype=np.float32)


def _table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows of a .csv, or of the one .csv inside a zip, as text."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                inside = [name for name in archive.namelist() if name.endswith(".csv")]
                if len(inside) != 1:
                    raise InvalidInput(f"{path.name} must hold exactly one .csv table, it holds {len(inside)}")
                text = archive.read(inside[0]).decode("utf-8-sig")
        else:
            text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError, zipfile.BadZipFile) as error:
        raise InvalidInput(f"{path.name} cannot be read as a CSV table: {error}") from None
    reader = csv.DictReader(io.StringIO(text))
    return list(reader.fieldnames or []), list(reader)


def read_rsna_labels(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """patientId -> boxes (K, 4) float32 (x1, y1, x2, y2) in pixels of the 1024 x 1024 original, K = 0 for a negative image.

    Patients and their boxes keep the file's order. Reads a .csv or a zip holding one .csv (torchxrayvision's
    kaggle_stage_2_train_labels.csv.zip). Any bad row raises InvalidInput naming the file and its line (line 1 = header).
    """
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"RSNA label table {path} does not exist; pass the {LABELS_FILE} of the Kaggle download")
    columns, table = _table(path)
    missing = [column for column in COLUMNS if column not in columns]
    if missing:
        raise InvalidInput(f"{path.name} lacks column(s) {', '.join(missing)}; its header must name {', '.join(COLUMNS)}")
    if not table:
        raise InvalidInput(f"{path.name} has a header but no label rows")
    boxes: dict[str, list[np.ndarray]] = {}
    first_line: dict[str, int] = {}
    rows = ([(row.get(column) or "").strip() for column in COLUMNS] for row in table)
    for line, (patient, *coordinates, target) in enumerate(rows, start=2):
        where = f"{path.name} line {line}"
        if not patient:
            raise InvalidInput(f"{where}: patientId is empty; every row names its image")
        if target not in ("0", "1", "0.0", "1.0"):
            raise InvalidInput(f"{where}: Target {target!r} must be 0 (no pneumonia) or 1 (a pneumonia box)")
        box = _box(coordinates, where)
        positive = target.startswith("1")
        if positive and box is None:
            raise InvalidInput(f"{where}: Target 1 needs a box; fill x, y, width, height or set Target 0")
        if not positive and box is not None:
            raise InvalidInput(f"{where}: Target 0 with a box; empty x, y, width, height or set Target 1")
        if patient in boxes and bool(boxes[patient]) != positive:
            raise InvalidInput(
                f"{where}: {patient} is {'positive' if positive else 'negative'} here but "
                f"{'negative' if positive else 'positive'} on line {first_line[patient]}; give one image one Target"
            )
        first_line.setdefault(patient, line)
        listed = boxes.setdefault(patient, [])
        if box is not None:
            listed.append(box)
    return {patient: np.stack(found) if found else np.zeros((0, 4), np.float32) for patient, found in boxes.items()}


def rsna_splits(patient_ids: Iterable[str], val: float = 0.1, test: float = 0.1, seed: int = 0) -> dict[str, list[str]]:
    """{"train", "val", "test"} -> sorted patient ids. Each patient's split depends only on (seed, its id) through sha256,
    so adding or removing patients never moves the others; the fractions hold in expectation."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise InvalidInput(f"split fractions val={val}, test={test} must be in [0, 1) with val + test below 1")
    splits: dict[str, list[str]] = {split: [] for split in SPLITS}
    for patient in sorted(set(patient_ids)):
        digest = hashlib.sha256(f"{seed}/rsna/{patient}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0**64
        splits["test" if u < test else "val" if u < test + val else "train"].append(patient)
    return splits


@dataclass(frozen=True)
class RsnaItem:
    """One image and its pneumonia boxes, in the image's own pixels."""

    patient_id: str
    image: np.ndarray  # float32 (H, W) in [0, 1], bright = dense
    boxes: np.ndarray  # float32 (K, 4) x1, y1, x2, y2 in pixel edges; K = 0 for a negative image
    spacing_mm: tuple[float, float] | None  # (row, column) spacing of `image`; None when the DICOM has none

    @property
    def positive(self) -> bool:
        return len(self.boxes) > 0


class RsnaDataset:
    """The labelled patients of `root` that have a DICOM, sorted by patientId; map-style (len, [i]) for a DataLoader.

    split_ids restricts to those patients (each must have a label row). Labelled patients without a DICOM are left out
    and listed in `missing_images`; DICOMs without a label row are ignored. With `size`, images become size x size.
    """

    def __init__(self, root: str | os.PathLike[str], split_ids: Iterable[str] | None = None, size: int | None = None) -> None:
        if size is not None and size < 1:
            raise InvalidInput(f"size {size} must be a positive number of pixels")
        self.root = Path(root)
        self.size = size
        self.images_dir = self.root / IMAGES_DIR
        self.labels = read_rsna_labels(self.root / LABELS_FILE)
        if not self.images_dir.is_dir():
            raise NotFound(f"RSNA images folder {self.images_dir} does not exist; put the <patientId>.dcm files there")
        wanted = list(self.labels) if split_ids is None else list(dict.fromkeys(split_ids))
        unknown = [patient for patient in wanted if patient not in self.labels]
        if unknown:
            raise InvalidInput(f"{len(unknown)} split id(s) have no row in {LABELS_FILE}, e.g. {unknown[0]}; split labelled ids")
        with os.scandir(self.images_dir) as entries:
            on_disk = {entry.name[: -len(".dcm")] for entry in entries if entry.name.endswith(".dcm")}
        self.patient_ids: tuple[str, ...] = tuple(sorted(patient for patient in wanted if patient in on_disk))
        self.missing_images: tuple[str, ...] = tuple(sorted(patient for patient in wanted if patient not in on_disk))
        if not self.patient_ids:
            raise NotFound(
                f"none of the {len(wanted)} labelled patients has a DICOM in {self.images_dir} (expected <patientId>.dcm)"
            )

    def __len__(self) -> int:
        return len(self.patient_ids)

    def image_path(self, patient_id: str) -> Path:
        return self.images_dir / f"{patient_id}.dcm"

    def __getitem__(self, index: int) -> RsnaItem:
        patient = self.patient_ids[index]
        path = self.image_path(patient)
        try:
            decoded = decode_dicom(path.read_bytes())
        except TwinRayError as error:
            raise type(error)(f"{path}: {error}") from None
        pixels, spacing = decoded.pixels, decoded.spacing_mm
        height, width = pixels.shape
        x_scale, y_scale = width / SIDE, height / SIDE
        if self.size is not None:
            pixels = to_model_input(pixels, self.size)[0, 0].numpy()
            x_scale, y_scale = self.size / SIDE, self.size / SIDE
            if spacing is not None:
                spacing = (spacing[0] * height / self.size, spacing[1] * width / self.size)
        boxes = self.labels[patient] * np.array([x_scale, y_scale, x_scale, y_scale], dtype=np.float32)
        return RsnaItem(patient_id=patient, image=pixels, boxes=boxes, spacing_mm=spacing)

    def __repr__(self) -> str:
        return f"RsnaDataset({str(self.root)!r}: {len(self)} images, {len(self.missing_images)} labelled without a DICOM)"


def rsna_split(root: str | os.PathLike[str], split: str, size: int | None = None) -> RsnaDataset:
    """The patients of `root` that `rsna_splits` (default fractions and seed) puts in `split` and that have a DICOM.

    The split is fixed whatever a run's seed, so every seed of a headline is scored on the same test patients."""
    if split not in SPLITS:
        raise InvalidInput(f"split {split!r} is not one of {', '.join(SPLITS)}")
    return RsnaDataset(root, rsna_splits(read_rsna_labels(Path(root) / LABELS_FILE))[split], size=size)

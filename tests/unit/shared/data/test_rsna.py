"""The RSNA pneumonia reader: the REAL packaged stage-2 label table (torchxrayvision==1.5.7), and small real-layout roots
made of real label rows and DICOMs written here (16-bit and, like the Kaggle files, 8-bit JPEG baseline)."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate

from twinray.shared.data import real_tables
from twinray.shared.data.rsna import IMAGES_DIR, LABELS_FILE, RsnaDataset, RsnaItem, read_rsna_labels, rsna_splits
from twinray.shared.platform.errors import InvalidInput, NotFound

NEGATIVE = "0004cfab-14fd-4e49-80ba-63a80b6bddd6"  # the table's first row
NEGATIVE_WITHOUT_DICOM = "00313ee0-9eaa-42f4-b0ab-c148ed3241cd"  # its second row
TWO_BOXES = "00436515-870c-4b36-a041-de91049b9ab4"
TWO_BOXES_CORNERS = [[264, 152, 477, 531], [562, 152, 818, 605]]  # rows 264,152,213,379 and 562,152,256,453 of the file
ONE_BOX = "0100515c-5204-4f31-98e0-f35e4b00004a"
ONE_BOX_CORNERS = [[703, 416, 787, 493]]  # row 703,416,84,77


@pytest.fixture(scope="module")
def packaged_path() -> Path:
    return real_tables.data_file(real_tables.RSNA_LABELS)


@pytest.fixture(scope="module")
def packaged(packaged_path: Path) -> dict[str, np.ndarray]:
    return read_rsna_labels(packaged_path)


@pytest.fixture(scope="module")
def raw_lines(packaged_path: Path) -> list[str]:
    """The packaged CSV's text lines, header first, exactly as Kaggle wrote them."""
    with zipfile.ZipFile(packaged_path) as archive:
        (name,) = archive.namelist()
        return archive.read(name).decode().splitlines()


def rows_of(raw_lines: list[str], *patients: str) -> list[str]:
    return [line for line in raw_lines[1:] if line.split(",", 1)[0] in patients]


# --- the real table ---------------------------------------------------------------------------------------------------


def test_real_table_counts_and_order(packaged: dict[str, np.ndarray], packaged_path: Path) -> None:
    counts = np.array([len(boxes) for boxes in packaged.values()])
    assert len(packaged) == 26_684
    assert (counts > 0).sum() == 6_012
    assert counts.sum() == 9_555
    assert np.maximum(counts, 1).sum() == 30_227  # one row per box, one per negative image
    assert {k: int(n) for k, n in zip(*np.unique(counts[counts > 0], return_counts=True))} == {1: 2614, 2: 3266, 3: 119, 4: 13}
    raw = pd.read_csv(packaged_path)
    assert list(packaged) == list(raw["patientId"].drop_duplicates())  # file order
    assert list(packaged)[:2] == [NEGATIVE, NEGATIVE_WITHOUT_DICOM]
    per_patient = raw[raw["Target"] == 1].groupby("patientId").size()
    assert {patient: len(boxes) for patient, boxes in packaged.items() if len(boxes)} == per_patient.to_dict()


def test_real_boxes_are_corners_inside_the_image(packaged: dict[str, np.ndarray]) -> None:
    boxes = np.concatenate(list(packaged.values()))
    assert boxes.dtype == np.float32 and boxes.shape == (9_555, 4)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 1024).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert packaged[NEGATIVE].shape == (0, 4) and packaged[NEGATIVE].dtype == np.float32
    assert packaged[TWO_BOXES].tolist() == TWO_BOXES_CORNERS  # file order within a patient, x2 = x + width
    assert packaged[ONE_BOX].tolist() == ONE_BOX_CORNERS


def test_plain_csv_reads_like_the_zip(packaged: dict[str, np.ndarray], raw_lines: list[str], tmp_path: Path) -> None:
    path = tmp_path / LABELS_FILE
    path.write_text("\n".join(raw_lines) + "\n")
    plain = read_rsna_labels(path)
    assert list(plain) == list(packaged)
    assert all(np.array_equal(plain[patient], packaged[patient]) for patient in packaged)


# --- bad tables -------------------------------------------------------------------------------------------------------

P = "ffffffff-0000-0000-0000-000000000000"


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        (f"{P},abc,152.0,213.0,379.0,1", "x 'abc' is not a number"),
        (f"{P},264.0,nan,213.0,379.0,1", "y 'nan' is not a number"),
        (f"{P},-1.0,152.0,213.0,379.0,1", "x -1, y 152 is negative"),
        (f"{P},264.0,152.0,0,379.0,1", "width 0, height 379 must both be above 0"),
        (f"{P},264.0,152.0,213.0,-5,1", "width 213, height -5 must both be above 0"),
        (f"{P},900.0,152.0,213.0,379.0,1", "the box reaches (1113, 531), beyond the 1024 x 1024 image"),
        (f"{P},264.0,,213.0,379.0,1", "x, y, width, height are partly empty; fill all four"),
        (f"{P},,,,,2", "Target '2' must be 0 (no pneumonia) or 1"),
        (f"{P},,,,,", "Target '' must be 0"),
        (f"{P},,,,,1", "Target 1 needs a box"),
        (f"{P},264.0,152.0,213.0,379.0,0", "Target 0 with a box"),
        (",,,,,0", "patientId is empty"),
        (f"{TWO_BOXES},,,,,0", f"{TWO_BOXES} is negative here but positive on line 3"),
        (f"{NEGATIVE},264.0,152.0,213.0,379.0,1", f"{NEGATIVE} is positive here but negative on line 2"),
    ],
)
def test_bad_rows_name_the_file_and_line(raw_lines: list[str], tmp_path: Path, bad_row: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("\n".join([raw_lines[0], *rows_of(raw_lines, NEGATIVE, TWO_BOXES), bad_row]) + "\n")
    with pytest.raises(InvalidInput, match=re.escape(f"labels.csv line 5: {message}")):
        read_rsna_labels(path)


def test_the_same_rows_without_the_bad_one_read(raw_lines: list[str], tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("\n".join([raw_lines[0], *rows_of(raw_lines, NEGATIVE, TWO_BOXES)]) + "\n")
    labels = read_rsna_labels(path)
    assert list(labels) == [NEGATIVE, TWO_BOXES] and labels[TWO_BOXES].tolist() == TWO_BOXES_CORNERS


def test_bad_headers_and_files(raw_lines: list[str], tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("patientId,x,y,w,height\n" + f"{P},1,2,3,4\n")
    with pytest.raises(InvalidInput, match=r"labels\.csv lacks column\(s\) width, Target; its header must name patientId"):
        read_rsna_labels(path)
    path.write_text(raw_lines[0] + "\n")
    with pytest.raises(InvalidInput, match=r"labels\.csv has a header but no label rows"):
        read_rsna_labels(path)
    with pytest.raises(NotFound, match=r"absent\.csv does not exist"):
        read_rsna_labels(tmp_path / "absent.csv")


# --- a root in the Kaggle layout ------------------------------------------------------------------------------------


def write_dicom(path: Path, patient: str, stored: np.ndarray, spacing: tuple[str, str] | None, jpeg: bool = False) -> None:
    """A single-frame MONOCHROME2 CR image: uncompressed 16-bit, or 8-bit JPEG baseline like the Kaggle files."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = uid.ComputedRadiographyImageStorage
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = uid.JPEGBaseline8Bit if jpeg else uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.BodyPartExamined = "CR", patient, "CHEST"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    bits = 8 if jpeg else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    if spacing is not None:
        ds.PixelSpacing = list(spacing)
    if jpeg:
        buffer = io.BytesIO()
        Image.fromarray(stored.astype(np.uint8), mode="L").save(buffer, format="JPEG", quality=95)
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
    else:
        ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def ramp(rows: int, columns: int, top: int) -> np.ndarray:
    """Stored values rising left to right and top to bottom from 0 to `top`."""
    return np.rint(np.add.outer(np.arange(rows) / (rows - 1), np.arange(columns) / (columns - 1)) / 2 * top).astype(np.int64)


@pytest.fixture(scope="module")
def real_rows(packaged: dict[str, np.ndarray]) -> dict[str, str]:
    """Real patients by role: the first with 3 and with 4 boxes join the fixed ones."""
    first = {count: next(p for p, boxes in packaged.items() if len(boxes) == count) for count in (3, 4)}
    return {
        "negative": NEGATIVE,
        "negative_without_dicom": NEGATIVE_WITHOUT_DICOM,
        "two": TWO_BOXES,
        "one": ONE_BOX,
        "three": first[3],
        "four": first[4],
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, raw_lines: list[str], real_rows: dict[str, str]) -> Path:
    root = tmp_path_factory.mktemp("rsna")
    (root / LABELS_FILE).write_text("\n".join([raw_lines[0], *rows_of(raw_lines, *real_rows.values())]) + "\n")
    images = root / IMAGES_DIR
    images.mkdir()
    write_dicom(images / f"{real_rows['two']}.dcm", real_rows["two"], ramp(1024, 1024, 65535), ("0.168", "0.168"))
    write_dicom(images / f"{real_rows['one']}.dcm", real_rows["one"], ramp(64, 64, 65535), ("2.5", "2.0"))
    write_dicom(images / f"{real_rows['three']}.dcm", real_rows["three"], ramp(128, 96, 40000), None)
    write_dicom(images / f"{real_rows['four']}.dcm", real_rows["four"], ramp(256, 256, 255), ("0.672", "0.672"), jpeg=True)
    write_dicom(images / f"{real_rows['negative']}.dcm", real_rows["negative"], ramp(64, 64, 1000), ("2.688", "2.688"))
    write_dicom(images / "unlabelled-patient.dcm", "unlabelled-patient", ramp(64, 64, 1000), None)
    (images / "notes.txt").write_text("not an image")
    return root


def items_by_id(dataset: RsnaDataset) -> dict[str, RsnaItem]:
    return {item.patient_id: item for item in (dataset[i] for i in range(len(dataset)))}


def test_dataset_lists_the_labelled_dicoms(root: Path, real_rows: dict[str, str]) -> None:
    dataset = RsnaDataset(root)
    with_dicom = sorted(patient for role, patient in real_rows.items() if role != "negative_without_dicom")
    assert dataset.patient_ids == tuple(with_dicom) and len(dataset) == 5
    assert dataset.missing_images == (NEGATIVE_WITHOUT_DICOM,)
    assert "5 images, 1 labelled without a DICOM" in repr(dataset)


def test_items_carry_scaled_boxes_unit_images_and_spacing(
    root: Path, real_rows: dict[str, str], packaged: dict[str, np.ndarray]
) -> None:
    items = items_by_id(RsnaDataset(root))
    two, one, three, four, negative = (items[real_rows[role]] for role in ("two", "one", "three", "four", "negative"))
    for item in items.values():
        assert item.image.dtype == np.float32 and item.boxes.dtype == np.float32
        assert item.image.min() >= 0.0 and item.image.max() <= 1.0
    # 1024 x 1024: boxes as written, image = stored / 65535, PixelSpacing as (row, column).
    assert two.image.shape == (1024, 1024) and two.boxes.tolist() == TWO_BOXES_CORNERS
    np.testing.assert_allclose(two.image, ramp(1024, 1024, 65535) / 65535, atol=1e-6)
    assert two.spacing_mm == (0.168, 0.168) and two.positive
    # 64 x 64: boxes scaled by 64 / 1024; row and column spacing kept apart.
    assert one.image.shape == (64, 64) and one.boxes.tolist() == (np.array(ONE_BOX_CORNERS) / 16).tolist()
    assert one.spacing_mm == (2.5, 2.0)
    np.testing.assert_allclose(one.image, ramp(64, 64, 65535) / 65535, atol=1e-6)
    # 128 rows x 96 columns: y scaled by 128 / 1024, x by 96 / 1024; no PixelSpacing -> None.
    assert three.image.shape == (128, 96) and len(three.boxes) == 3 and three.spacing_mm is None
    expected = packaged[real_rows["three"]] * np.array([96, 128, 96, 128]) / 1024
    np.testing.assert_allclose(three.boxes, expected, rtol=1e-6)
    np.testing.assert_allclose(three.image.max(), 40000 / 65535, atol=1e-6)  # the BitsStored range maps to [0, 1]
    # 8-bit JPEG baseline, like the Kaggle files: stored / 255 up to JPEG loss.
    assert four.image.shape == (256, 256) and len(four.boxes) == 4 and four.spacing_mm == (0.672, 0.672)
    np.testing.assert_allclose(four.boxes, packaged[real_rows["four"]] / 4, rtol=1e-6)
    np.testing.assert_allclose(four.image, ramp(256, 256, 255) / 255, atol=0.03)
    assert negative.boxes.shape == (0, 4) and not negative.positive


def test_size_resizes_image_boxes_and_spacing(root: Path, real_rows: dict[str, str], packaged: dict[str, np.ndarray]) -> None:
    items = items_by_id(RsnaDataset(root, size=32))
    for item in items.values():
        assert item.image.shape == (32, 32) and item.image.dtype == np.float32
        assert item.image.min() >= 0.0 and item.image.max() <= 1.0
        np.testing.assert_allclose(item.boxes, packaged[item.patient_id] / 32, rtol=1e-6)  # 32 / 1024 from any DICOM size
    assert items[real_rows["two"]].spacing_mm == pytest.approx((0.168 * 32, 0.168 * 32))
    assert items[real_rows["one"]].spacing_mm == pytest.approx((5.0, 4.0))
    assert items[real_rows["three"]].spacing_mm is None
    two = items[real_rows["two"]].image  # the ramp survives the resize: dark top left, bright bottom right
    assert two[0, 0] < 0.05 and two[-1, -1] > 0.95 and two[0, -1] == pytest.approx(0.5, abs=0.05)


def test_split_ids_restrict_the_dataset(root: Path, real_rows: dict[str, str]) -> None:
    dataset = RsnaDataset(root, split_ids=[real_rows["one"], NEGATIVE_WITHOUT_DICOM, real_rows["one"]])
    assert dataset.patient_ids == (real_rows["one"],) and dataset.missing_images == (NEGATIVE_WITHOUT_DICOM,)
    assert dataset[0].patient_id == real_rows["one"]
    with pytest.raises(
        InvalidInput, match=r"1 split id\(s\) have no row in stage_2_train_labels\.csv, e\.g\. unlabelled-patient"
    ):
        RsnaDataset(root, split_ids=[real_rows["one"], "unlabelled-patient"])
    with pytest.raises(NotFound, match=r"none of the 1 labelled patients has a DICOM"):
        RsnaDataset(root, split_ids=[NEGATIVE_WITHOUT_DICOM])
    with pytest.raises(InvalidInput, match="size 0 must be a positive"):
        RsnaDataset(root, size=0)


def test_missing_parts_of_the_layout(raw_lines: list[str], tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=re.escape(f"{tmp_path / LABELS_FILE} does not exist")):
        RsnaDataset(tmp_path)
    (tmp_path / LABELS_FILE).write_text("\n".join([raw_lines[0], *rows_of(raw_lines, NEGATIVE, TWO_BOXES)]) + "\n")
    with pytest.raises(NotFound, match=re.escape(f"images folder {tmp_path / IMAGES_DIR} does not exist")):
        RsnaDataset(tmp_path)
    (tmp_path / IMAGES_DIR).mkdir()
    (tmp_path / IMAGES_DIR / "other.dcm").write_bytes(b"")
    with pytest.raises(NotFound, match=r"none of the 2 labelled patients has a DICOM in .*stage_2_train_images"):
        RsnaDataset(tmp_path)
    (tmp_path / IMAGES_DIR / f"{TWO_BOXES}.dcm").write_bytes(b"DICM but not really a DICOM file")
    dataset = RsnaDataset(tmp_path)
    assert dataset.patient_ids == (TWO_BOXES,) and dataset.missing_images == (NEGATIVE,)
    with pytest.raises(InvalidInput, match=re.escape(f"{TWO_BOXES}.dcm: ")):
        dataset[0]


# --- splits -------------------------------------------------------------------------------------------------------


def test_splits_are_disjoint_sorted_and_stable(packaged: dict[str, np.ndarray]) -> None:
    ids = list(packaged)
    splits = rsna_splits(ids, val=0.1, test=0.2, seed=3)
    assert set(splits) == {"train", "val", "test"}
    assert sorted(sum(splits.values(), [])) == sorted(ids)  # every patient exactly once
    assert all(members == sorted(members) for members in splits.values())
    assert len(splits["val"]) / len(ids) == pytest.approx(0.1, abs=0.01)
    assert len(splits["test"]) / len(ids) == pytest.approx(0.2, abs=0.01)
    assert rsna_splits(reversed(ids), val=0.1, test=0.2, seed=3) == splits  # input order does not matter
    half = set(ids[::2])  # dropping patients moves nobody else
    assert rsna_splits(half, val=0.1, test=0.2, seed=3) == {k: [p for p in v if p in half] for k, v in splits.items()}
    assert rsna_splits(ids, val=0.1, test=0.2, seed=4)["test"] != splits["test"]
    assert rsna_splits(ids, val=0.0, test=0.0)["train"] == sorted(ids)


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (0.5, 0.5), (1.0, 0.0), (0.2, 0.9)])
def test_bad_split_fractions(val: float, test: float) -> None:
    with pytest.raises(InvalidInput, match="must be in \\[0, 1\\) with val \\+ test below 1"):
        rsna_splits(["a", "b"], val=val, test=test)


def test_dicom_helper_writes_what_pydicom_reads(tmp_path: Path) -> None:
    write_dicom(tmp_path / "x.dcm", "x", ramp(16, 8, 300), ("1.5", "0.5"))
    ds = pydicom.dcmread(tmp_path / "x.dcm")
    assert ds.pixel_array.shape == (16, 8) and int(ds.pixel_array.max()) == 300 and list(ds.PixelSpacing) == [1.5, 0.5]

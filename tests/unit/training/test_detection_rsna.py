"""The detector on the real RSNA layout, without Ray: a folder of REAL label rows (torchxrayvision==1.5.7's packaged
stage-2 table) and real DICOMs (pydicom's bundled MR_small 64 x 64 and CT_small 128 x 128) under real patientIds,
read split by split as the detector reads it, and the inputs `prepare` refuses before Ray starts."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from pydicom.data import get_testdata_file

from twinray.services.cli.main import _train_config, build_parser
from twinray.shared.data import real_tables
from twinray.shared.data.anatomy import NUM_ANATOMY_CLASSES
from twinray.shared.data.phantoms.pathologies import PATHOLOGIES
from twinray.shared.data.rsna import IMAGES_DIR, LABELS_FILE, rsna_split
from twinray.shared.models.detection.network import DetectorConfig
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig
from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.storage import sha256_bytes
from twinray.shared.platform.storage.local import LocalStore
from twinray.shared.synthesis.synthetic_abnormal import anatomy_maps
from twinray.training import harness
from twinray.training.detection import SPEC, card, prepare
from twinray.training.detection_data import DetectionTrainConfig, detection_config, detection_split

ONE_BOX = "0100515c-5204-4f31-98e0-f35e4b00004a"  # train; row 703,416,84,77
TWO_BOXES = "00436515-870c-4b36-a041-de91049b9ab4"  # test; rows 264,152,213,379 and 562,152,256,453
NEGATIVE = "0004cfab-14fd-4e49-80ba-63a80b6bddd6"  # train, Target 0
WITHOUT_DICOM = "00313ee0-9eaa-42f4-b0ab-c148ed3241cd"  # val, Target 0, no DICOM in the folder
# The split (rsna_splits' default: 10% val, 10% test by sha256 of the id) of every patient with a DICOM here.
PATIENTS = {
    "train": [NEGATIVE, "00704310-78a8-4b38-8475-49f4573b2dbb", "00aecb01-a116-45a2-956c-08d2fa55433f", ONE_BOX],
    "val": ["00322d4d-1c29-4943-afc9-b6754be640eb", "019d950b-dd38-4cf3-a686-527a75728be6"],
    "test": [TWO_BOXES, "009482dc-3db5-48d4-8580-5c89c4f01334"],
}
S = 64  # the tests' detector input: every box is its 1024-px row / 16


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Kaggle layout: the real rows of these patients (and of one without a DICOM), one real DICOM each."""
    root = tmp_path_factory.mktemp("rsna")
    with zipfile.ZipFile(real_tables.data_file(real_tables.RSNA_LABELS)) as archive:
        (name,) = archive.namelist()
        header, *rows = archive.read(name).decode().splitlines()
    patients = [patient for split in PATIENTS.values() for patient in split]
    chosen = [row for row in rows if row.split(",", 1)[0] in {*patients, WITHOUT_DICOM}]
    (root / LABELS_FILE).write_text("\n".join([header, *chosen]) + "\n")
    (root / IMAGES_DIR).mkdir()
    for i, patient in enumerate(patients):
        shutil.copy(get_testdata_file("CT_small.dcm" if i % 2 else "MR_small.dcm"), root / IMAGES_DIR / f"{patient}.dcm")
    return root


def rsna_config(root: Path, variant: str = "baseline", **fields: object) -> DetectionTrainConfig:
    return detection_config(variant, dataset="rsna", root=str(root), model=DetectorConfig(input_size=S), **fields)


def test_a_split_is_its_patients_8_bit_images_and_opacity_boxes_scaled_to_the_input(root: Path) -> None:
    train = detection_split(None, rsna_config(root), "train", None)
    assert train.image.shape == (4, 1, S, S) and train.image.dtype == torch.uint8
    assert train.residual is None and train.anatomy is None
    floats = rsna_split(root, "train", S)  # the decoded, resized float images, sorted by patientId
    assert floats.patient_ids == tuple(sorted(PATIENTS["train"]))
    for i in range(len(floats)):
        torch.testing.assert_close(train.image[i, 0] / 255, torch.from_numpy(floats[i].image), atol=1 / 510, rtol=0)
    inputs = train.inputs(DetectorConfig(input_size=S), torch.arange(4))
    assert inputs.dtype == torch.float32 and inputs.shape == (4, 1, S, S) and 0 <= inputs.min() and inputs.max() <= 1
    targets = dict(zip(floats.patient_ids, train.targets))
    assert targets[ONE_BOX]["boxes"].tolist() == [[703 / 16, 416 / 16, 787 / 16, 493 / 16]]
    assert targets[NEGATIVE]["boxes"].shape == (0, 4) and targets[NEGATIVE]["labels"].shape == (0,)
    for target in train.targets:
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
        assert {PATHOLOGIES[label] for label in target["labels"].tolist()} <= {"opacity"}
    assert sum(len(t["labels"]) for t in train.targets) == 1 + 2 + 2  # ONE_BOX, and two patients of two boxes


def test_splits_are_disjoint_and_keep_the_real_tables_boxes(root: Path) -> None:
    ids = {split: set(rsna_split(root, split).patient_ids) for split in PATIENTS}
    assert ids == {split: set(patients) for split, patients in PATIENTS.items()}  # disjoint by construction of PATIENTS
    assert rsna_split(root, "val").missing_images == (WITHOUT_DICOM,)
    test = detection_split(None, rsna_config(root), "test", None)
    assert [len(t["boxes"]) for t in test.targets] == [2, 0]  # sorted: 00436515 (two boxes), then 009482dc
    assert test.targets[0]["boxes"].tolist() == [[16.5, 9.5, 29.8125, 33.1875], [35.125, 9.5, 51.125, 37.8125]]
    with pytest.raises(InvalidInput, match="split 'holdout' is not one of train, val, test"):
        rsna_split(root, "holdout")


def test_the_anatomy_variant_labels_the_float_images(root: Path) -> None:
    segmenter = AnatomySegmenter(SegmenterConfig(input_size=32, channels=(4, 8))).eval()
    val = detection_split(None, rsna_config(root, "anatomy"), "val", segmenter)
    assert val.anatomy.shape == (2, S, S) and val.anatomy.dtype == torch.uint8
    floats = torch.stack([torch.from_numpy(item.image) for item in rsna_split(root, "val", S)])[:, None]
    assert torch.equal(val.anatomy, anatomy_maps(segmenter, floats, torch.device("cpu")).to(torch.uint8))
    assert val.inputs(DetectorConfig(input_size=S, variant="anatomy"), torch.arange(2)).shape[:2] == (2, 1 + NUM_ANATOMY_CLASSES)


def test_reading_real_dicoms_keeps_pydicom_from_quoting_their_headers(root: Path, monkeypatch) -> None:
    monkeypatch.setattr(logging.getLogger("pydicom"), "propagate", True)  # as a fresh worker process has it
    detection_split(None, rsna_config(root), "val", None)
    assert logging.getLogger("pydicom").propagate is False


def test_prepare_makes_the_root_absolute_and_records_the_split(root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(root.parent)
    prepared = prepare(LocalStore(tmp_path, "test"), rsna_config(Path(root.name), batch_size=2))
    assert prepared.config.root == str(root) and prepared.config.model.input_size == 256
    assert prepared.training == {
        "rsna": {
            "labels_sha256": sha256_bytes((root / LABELS_FILE).read_bytes()),
            "images": {"train": 4, "val": 2, "test": 2},
            "labelled_without_dicom": 1,
        }
    }
    text = card(harness.Trained(prepared, 1, {"val_rsna_score": 0.25}, {}))
    assert "RSNA Pneumonia Detection stage-2 train images (4 train, 2 val; every box an opacity)" in text
    assert "Real radiographs" in text and "Phantoms only" not in text
    anatomy = dataclasses.replace(prepared, config=rsna_config(root, "anatomy", segmentation_version=3))
    assert "segmenter trained on phantoms" in card(harness.Trained(anatomy, 1, {}, {}))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"variant": "concat"}, "--dataset rsna trains baseline or anatomy, not concat: its twin residuals come from twins"),
        ({"variant": "attention"}, "not attention"),
        ({"synthetic": "syn", "synthetic_count": 2}, "--dataset rsna takes no --synthetic: synthetic abnormal images"),
        ({"root": ""}, "pass --root DIR, the Kaggle download folder holding stage_2_train_labels.csv and stage_2_train_images/"),
        ({"root": "/nowhere/rsna"}, "--root /nowhere/rsna lacks stage_2_train_labels.csv or stage_2_train_images/"),
        ({"batch_size": 5}, "train split of .* has 4 images, fewer than --batch-size 5"),
        ({"dataset": "cxr-phantoms-v2"}, "--root is read with --dataset rsna only; 'cxr-phantoms-v2' comes from"),
    ],
)
def test_prepare_refuses(root: Path, tmp_path: Path, fields: dict, message: str) -> None:
    config = detection_config(**{"dataset": "rsna", "root": str(root), **fields})
    with pytest.raises(InvalidInput, match=message):
        prepare(LocalStore(tmp_path, "test"), config)


def test_one_command_reads_the_folder(root: Path) -> None:
    args = build_parser().parse_args(["train", "detection", "--dataset", "rsna", "--root", str(root), "--variant", "anatomy"])
    config = _train_config(SPEC, args)
    assert (config.dataset, config.root, config.model.variant) == ("rsna", str(root), "anatomy")

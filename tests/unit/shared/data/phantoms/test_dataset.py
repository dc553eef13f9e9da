"""Phantom datasets round-trip through the real LocalStore, manifest last, reused, never clobbered."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from twinray.shared.data.anatomy import ANATOMY_CLASSES, LUNGS
from twinray.shared.data.phantoms import render_phantom
from twinray.shared.data.phantoms.cxr_v2 import VIEWS, render_phantom_v2
from twinray.shared.data.phantoms.dataset import (
    PhantomSegmentationDataset,
    manifest_key,
    read_phantom_manifest,
    read_phantom_split,
    write_phantom_dataset,
)
from twinray.shared.data.phantoms.pathologies import OPACITY, PATHOLOGIES
from twinray.shared.platform.errors import IntegrityError, InvalidInput, NotFound
from twinray.shared.platform.storage.local import LocalStore

SPLITS = {"train": 5, "val": 3}
PARAMS = {"size": 64, "splits": SPLITS, "seed": 11, "abnormal_fraction": 0.6, "shard_size": 2, "progress": False}


class RecordingStore(LocalStore):
    """The real LocalStore, remembering the order of writes and failing after `fail_after` of them."""

    def __init__(self, root: Path, fail_after: int | None = None) -> None:
        super().__init__(root, "test")
        self.puts: list[str] = []
        self.fail_after = fail_after

    def put_bytes(self, key: str, data: bytes, **kwargs):  # type: ignore[override]
        if self.fail_after is not None and len(self.puts) >= self.fail_after:
            raise OSError("disk full")
        self.puts.append(key)
        return super().put_bytes(key, data, **kwargs)


@pytest.fixture()
def store(tmp_path: Path) -> RecordingStore:
    return RecordingStore(tmp_path)


def test_round_trip_matches_the_renderer(store: RecordingStore) -> None:
    manifest = write_phantom_dataset(store, "tiny", **PARAMS)
    assert manifest["label_set"] == list(ANATOMY_CLASSES) and manifest["size"] == 64
    assert {s: e["count"] for s, e in manifest["splits"].items()} == SPLITS
    assert [len(e["shards"]) for e in manifest["splits"].values()] == [3, 2]  # train 2+2+1, val 2+1
    train = read_phantom_split(store, "tiny", "train")
    assert len(train) == 5 and train.image.dtype == np.uint16 and train.image.shape == (5, 64, 64)
    assert (train.lesion_seed >= 0).sum() == manifest["splits"]["train"]["abnormal"] == 3
    for i in range(len(train)):
        lesion = None if train.lesion_seed[i] < 0 else int(train.lesion_seed[i])
        ph = render_phantom(int(train.person_seed[i]), 64, lesion_seed=lesion)
        np.testing.assert_allclose(train.image[i] / 65535.0, ph.image, atol=1 / 65535)
        np.testing.assert_allclose(train.twin[i] / 65535.0, ph.twin, atol=1 / 65535)
        np.testing.assert_array_equal(train.anatomy[i], ph.anatomy)
        np.testing.assert_array_equal(train.lesion_mask[i], ph.lesion_mask)
        np.testing.assert_array_equal(train.boxes_of(i), ph.boxes)
    assert train.spacing_mm == pytest.approx(430.0 / 64)


def test_a_v1_split_reads_with_the_v2_fields_as_v1_draws_them(store: RecordingStore) -> None:
    train = read_phantom_split(store, write_phantom_dataset(store, "tiny", **PARAMS)["name"], "train")
    assert (train.view == VIEWS.index("PA")).all()
    np.testing.assert_array_equal(train.lung_field, np.isin(train.anatomy, LUNGS))
    np.testing.assert_array_equal(train.lesion_labels > 0, train.lesion_mask)
    for i in range(len(train)):
        classes = train.lesion_classes[i]
        assert (classes[: train.box_count[i]] == OPACITY).all() and (classes[train.box_count[i] :] == -1).all()


def test_a_v2_dataset_round_trips_every_field_of_the_renderer(store: RecordingStore) -> None:
    manifest = write_phantom_dataset(store, "v2", **PARAMS, generator="cxr-phantom/2")
    assert manifest["format"] == "twinray.cxr-phantoms/2" and manifest["pathologies"] == list(PATHOLOGIES)
    train = read_phantom_split(store, "v2", "train")
    assert train.boxes.shape[1] == manifest["max_boxes"] == 6
    for i in range(len(train)):
        lesion = None if train.lesion_seed[i] < 0 else int(train.lesion_seed[i])
        ph = render_phantom_v2(int(train.person_seed[i]), 64, lesion_seed=lesion, view=VIEWS[train.view[i]])
        np.testing.assert_allclose(train.image[i] / 65535.0, ph.image, atol=1 / 65535)
        np.testing.assert_allclose(train.twin[i] / 65535.0, ph.twin, atol=1 / 65535)
        for field in ("anatomy", "lung_field", "lesion_labels", "lesion_mask"):
            np.testing.assert_array_equal(getattr(train, field)[i], getattr(ph, field))
        np.testing.assert_array_equal(train.boxes_of(i), ph.boxes)
        np.testing.assert_array_equal(train.lesion_classes[i][: train.box_count[i]], ph.lesion_classes)


def test_worker_processes_render_the_same_dataset(tmp_path: Path) -> None:
    one, two = LocalStore(tmp_path / "one", "test"), LocalStore(tmp_path / "two", "test")
    serial = write_phantom_dataset(one, "v2", **PARAMS, generator="cxr-phantom/2")
    parallel = write_phantom_dataset(two, "v2", **PARAMS, generator="cxr-phantom/2", workers=2)
    assert [shard["sha256"] for split in SPLITS for shard in serial["splits"][split]["shards"]] == [
        shard["sha256"] for split in SPLITS for shard in parallel["splits"][split]["shards"]
    ]
    with pytest.raises(InvalidInput, match="workers must be a positive integer"):
        write_phantom_dataset(one, "other", **PARAMS, workers=0)


def test_an_unknown_generator_is_invalid_input(store: RecordingStore) -> None:
    with pytest.raises(InvalidInput, match="cxr-phantom/9"):
        write_phantom_dataset(store, "tiny", **PARAMS, generator="cxr-phantom/9")


def test_manifest_is_written_last_and_a_crash_leaves_no_dataset(tmp_path: Path, store: RecordingStore) -> None:
    write_phantom_dataset(store, "tiny", **PARAMS)
    assert store.puts[-1] == manifest_key("tiny") and store.puts.count(manifest_key("tiny")) == 1
    crashing = RecordingStore(tmp_path / "other", fail_after=3)
    with pytest.raises(OSError):
        write_phantom_dataset(crashing, "tiny", **PARAMS)
    assert crashing.list("datasets/tiny/") and not crashing.exists(manifest_key("tiny"))
    with pytest.raises(NotFound, match="tiny"):
        read_phantom_split(crashing, "tiny", "train")
    crashing.fail_after = None
    assert write_phantom_dataset(crashing, "tiny", **PARAMS)["splits"]["val"]["count"] == 3


def test_same_parameters_reuse_the_dataset(store: RecordingStore, caplog: pytest.LogCaptureFixture) -> None:
    first = write_phantom_dataset(store, "tiny", **PARAMS)
    writes = len(store.puts)
    with caplog.at_level(logging.INFO, logger="twinray.shared.data.dataset_io"):
        again = write_phantom_dataset(store, "tiny", **{**PARAMS, "splits": dict(reversed(SPLITS.items()))})
    assert again == first and len(store.puts) == writes
    assert "reusing" in caplog.text


def test_other_parameters_under_the_same_name_are_refused(store: RecordingStore) -> None:
    write_phantom_dataset(store, "tiny", **PARAMS)
    for change in ({"seed": 12}, {"size": 96}, {"splits": {"train": 6, "val": 3}}, {"abnormal_fraction": 0.5}):
        with pytest.raises(InvalidInput, match="tiny"):
            write_phantom_dataset(store, "tiny", **{**PARAMS, **change})


def test_splits_never_share_a_person(store: RecordingStore) -> None:
    write_phantom_dataset(store, "tiny", **{**PARAMS, "splits": {"train": 6, "val": 4, "test": 4}})
    persons = {s: set(read_phantom_split(store, "tiny", s).person_seed.tolist()) for s in ("train", "val", "test")}
    assert sum(map(len, persons.values())) == 14 == len(set.union(*persons.values()))


def test_corrupt_shard_is_an_integrity_error(store: RecordingStore) -> None:
    manifest = write_phantom_dataset(store, "tiny", **PARAMS)
    key = manifest["splits"]["val"]["shards"][0]["key"]
    store.put_bytes(key, store.get_bytes(key)[:-10] + b"0123456789")
    with pytest.raises(IntegrityError):
        read_phantom_split(store, "tiny", "val")


def test_bad_manifest_and_missing_names(store: RecordingStore) -> None:
    with pytest.raises(NotFound, match="nothing"):
        read_phantom_split(store, "nothing", "train")
    manifest = write_phantom_dataset(store, "tiny", **PARAMS)
    with pytest.raises(NotFound, match="test"):
        read_phantom_split(store, "tiny", "test")
    del manifest["splits"], manifest["label_set"]
    store.put_bytes(manifest_key("tiny"), json.dumps(manifest).encode())
    with pytest.raises(InvalidInput, match="'tiny'.*splits"):
        read_phantom_manifest(store, "tiny")
    with pytest.raises(InvalidInput, match="tiny"):
        write_phantom_dataset(store, "tiny", **PARAMS)
    store.put_bytes(manifest_key("tiny"), b"{not json")
    with pytest.raises(InvalidInput, match="tiny"):
        read_phantom_split(store, "tiny", "train")


@pytest.mark.parametrize(
    "change",
    [
        {"size": 8},
        {"splits": {}},
        {"splits": {"train": 0}},
        {"splits": {"../x": 2}},
        {"seed": -1},
        {"abnormal_fraction": 1.5},
        {"shard_size": 0},
    ],
)
def test_bad_requests_are_invalid_input(store: RecordingStore, change: dict) -> None:
    with pytest.raises(InvalidInput):
        write_phantom_dataset(store, "tiny", **{**PARAMS, **change})
    with pytest.raises(InvalidInput):
        write_phantom_dataset(store, "../escape", **PARAMS)


def test_segmentation_dataset_items(store: RecordingStore) -> None:
    write_phantom_dataset(store, "tiny", **PARAMS)
    dataset = PhantomSegmentationDataset(read_phantom_split(store, "tiny", "val"))
    image, anatomy = dataset[1]
    assert len(dataset) == 3
    assert image.shape == (1, 64, 64) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    assert anatomy.shape == (64, 64) and anatomy.dtype == torch.int64 and anatomy.max() < len(ANATOMY_CLASSES)

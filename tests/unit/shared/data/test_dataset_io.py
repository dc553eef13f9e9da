"""The store I/O every generated dataset shares, on the real LocalStore: keys, seeds, manifest checks,
reuse, the manifest commit and verified shard loading."""

from __future__ import annotations

import datetime
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from twinray.shared.data.dataset_io import (
    check_name,
    commit_manifest,
    derived_seed,
    load_split,
    manifest_key,
    read_manifest_json,
    reusable,
    shard_key,
    split_entry,
    splits_well_formed,
    stored_parameters,
    validated_manifest,
)
from twinray.shared.platform.errors import IntegrityError, InvalidInput, NotFound
from twinray.shared.platform.storage import LocalStore

WHAT = "test dataset"
KEYS = ("format", "size", "splits")
SHAPES = {"image": (4, 3), "seed": ()}
DTYPES = {"image": np.uint16, "seed": np.int64}


class RecordingStore(LocalStore):
    """The real LocalStore, remembering the keys it was asked to write, in order."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "test")
        self.puts: list[str] = []

    def put_bytes(self, key: str, data: bytes, **kwargs):  # type: ignore[override]
        self.puts.append(key)
        return super().put_bytes(key, data, **kwargs)


@pytest.fixture
def store(tmp_path: Path) -> RecordingStore:
    return RecordingStore(tmp_path)


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def shard(store: LocalStore, index: int, first: int, count: int, **override: np.ndarray) -> dict:
    """Shard `index` of split "train" holding images first..first+count-1 (pixel values = image number)."""
    arrays = {
        "image": np.repeat(np.arange(first, first + count, dtype=np.uint16), 12).reshape(count, 4, 3),
        "seed": np.arange(first, first + count, dtype=np.int64) * 10,
        **override,
    }
    ref = store.put_bytes(shard_key("toy", "train", index), npz(**arrays))
    return {"key": ref.key, "sha256": ref.sha256, "count": count}


def manifest(**override: object) -> dict:
    return {"format": "toy/1", "size": 4, "splits": {"train": {"count": 0, "shards": []}}, **override}


def check(manifest: dict) -> str:
    return "" if manifest["size"] == 4 else f"its size is {manifest['size']}"


def validated(store: LocalStore) -> dict:
    return validated_manifest(store, "toy", what=WHAT, dataset_format="toy/1", keys=KEYS, check=check)


def test_keys() -> None:
    assert manifest_key("cxr-64") == "datasets/cxr-64/manifest.json"
    assert shard_key("cxr-64", "val", 3) == "datasets/cxr-64/val/shard-00003.npz"
    assert shard_key("cxr-64", "train", 123456) == "datasets/cxr-64/train/shard-123456.npz"


def test_derived_seed_is_stable_and_distinct_per_seed_split_kind_and_index() -> None:
    # Pinned: stored datasets are regenerated from these and compared byte for byte.
    assert derived_seed(1, "train", "person", 0) == 2339135791934000166
    assert derived_seed(1, "train", "person", 1) == 1192273855158706180
    assert derived_seed(0, "val", "lesion", 7) == 3839720984490801985
    variants = [
        (seed, split, kind, index)
        for seed in (0, 1)
        for split in ("train", "val")
        for kind in ("person", "lesion", "abnormal")
        for index in range(5)
    ]
    seeds = [derived_seed(*variant) for variant in variants]
    assert len(set(seeds)) == len(variants)
    assert all(0 <= s < 2**63 for s in seeds)  # fits int64 shard arrays


@pytest.mark.parametrize("name", ["a", "cxr-64", "Phantoms_v1.2", "9", "x" * 128])
def test_check_name_accepts_simple_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "-a", "a b", "a\n", "x" * 129, 5, None])
def test_check_name_refuses_everything_else(name: object) -> None:
    with pytest.raises(InvalidInput, match="invalid dataset name"):
        check_name(name)


def test_splits_well_formed() -> None:
    good = {"train": {"count": 1, "shards": [{"key": "k", "sha256": "s", "count": 1, "bytes": 9}]}}
    assert splits_well_formed(good) and splits_well_formed({})
    assert not splits_well_formed([])
    assert not splits_well_formed({"train": {"count": "1", "shards": []}})
    assert not splits_well_formed({"train": {"count": 1}})
    assert not splits_well_formed({"train": {"count": 1, "shards": [{"key": "k", "count": 1}]}})


def test_stored_parameters_are_the_keys_and_the_count_per_split() -> None:
    stored = manifest(splits={"val": {"count": 2, "shards": []}, "train": {"count": 5, "shards": []}}, extra="x")
    assert stored_parameters(stored, ("format", "size")) == {"format": "toy/1", "size": 4, "splits": {"train": 5, "val": 2}}
    assert list(stored_parameters(stored, ("format",))["splits"]) == ["train", "val"]


def test_read_manifest_json(store: LocalStore) -> None:
    with pytest.raises(InvalidInput, match="invalid dataset name"):
        read_manifest_json(store, "../toy", WHAT)
    with pytest.raises(NotFound, match=r"no test dataset 'toy': .*datasets/toy/manifest.json does not exist"):
        read_manifest_json(store, "toy", WHAT)
    store.put_bytes(manifest_key("toy"), b'{"format": "toy/1"}')
    assert read_manifest_json(store, "toy", WHAT) == {"format": "toy/1"}


def test_validated_manifest_returns_a_complete_manifest(store: LocalStore) -> None:
    store.put_bytes(manifest_key("toy"), json.dumps(manifest()).encode())
    assert validated(store) == manifest()


@pytest.mark.parametrize(
    ("stored", "problem"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "it is not a JSON object"),
        (json.dumps({"format": "toy/1"}).encode(), "it lacks size, splits"),
        (json.dumps(manifest(format="toy/2")).encode(), "its format is 'toy/2', this code reads 'toy/1'"),
        (json.dumps(manifest(size=8)).encode(), "its size is 8"),
        (json.dumps(manifest(splits={"train": {"count": 1}})).encode(), "its splits need a count and shards"),
    ],
)
def test_validated_manifest_names_the_problem(store: LocalStore, stored: bytes, problem: str) -> None:
    store.put_bytes(manifest_key("toy"), stored)
    with pytest.raises(InvalidInput) as raised:
        validated(store)
    assert str(raised.value).startswith("test dataset 'toy' has an invalid manifest: ")
    assert problem in str(raised.value)


def test_validated_manifest_of_a_missing_dataset_is_not_found(store: LocalStore) -> None:
    with pytest.raises(NotFound):
        validated(store)


def test_reusable(store: LocalStore, caplog: pytest.LogCaptureFixture) -> None:
    entry = {"count": 3, "shards": [shard(store, 0, 0, 2), shard(store, 1, 2, 1)]}
    existing = manifest(splits={"train": entry})
    stored = stored_parameters(existing, KEYS[:2])
    with caplog.at_level(logging.INFO, logger="twinray.shared.data.dataset_io"):
        assert reusable(store, WHAT, existing, stored, dict(stored)) is True
        store.delete(entry["shards"][1]["key"])
        assert reusable(store, WHAT, existing, stored, dict(stored)) is False  # rewrite it
    assert "reusing test dataset" in caplog.text and "test dataset lacks shards; rewriting it" in caplog.text
    with pytest.raises(InvalidInput, match="test dataset already exists with other parameters"):
        reusable(store, WHAT, existing, stored, {**stored, "size": 8})


def test_commit_manifest_writes_one_stamped_object_last(store: RecordingStore) -> None:
    entry = {"count": 2, "shards": [shard(store, 0, 0, 2)]}
    written = manifest(splits={"train": entry})
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    returned = commit_manifest(store, "toy", written, WHAT)
    assert returned is written and store.puts == [shard_key("toy", "train", 0), manifest_key("toy")]
    stamped = datetime.datetime.fromisoformat(returned["created_at"])
    assert stamped.tzinfo == datetime.UTC and before <= stamped <= datetime.datetime.now(datetime.UTC)
    raw = store.get_bytes(manifest_key("toy"))
    assert json.loads(raw) == returned and raw == json.dumps(returned, indent=2, sort_keys=True).encode()
    assert store.list("datasets/toy/") == [manifest_key("toy"), shard_key("toy", "train", 0)]
    assert not list(store.directory.rglob(".twinray-partial-*"))  # the temp file was renamed onto the key
    assert validated(store) == returned


def test_a_manifest_that_cannot_be_serialised_writes_nothing(store: RecordingStore) -> None:
    entry = {"count": np.int64(2), "shards": [shard(store, 0, 0, 2)]}  # a numpy count: not JSON
    with pytest.raises(TypeError):
        commit_manifest(store, "toy", manifest(splits={"train": entry}), WHAT)
    assert store.puts == [shard_key("toy", "train", 0)] and not store.exists(manifest_key("toy"))


def test_split_entry(store: LocalStore) -> None:
    splits = {"val": {"count": 1, "shards": []}, "train": {"count": 2, "shards": []}}
    assert split_entry(manifest(splits=splits), "toy", "val", WHAT) == {"count": 1, "shards": []}
    with pytest.raises(NotFound, match=r"test dataset 'toy' has no split 'test' \(it has \['train', 'val'\]\)"):
        split_entry(manifest(splits=splits), "toy", "test", WHAT)


def test_load_split_concatenates_verified_shards(store: LocalStore) -> None:
    entry = {"count": 5, "shards": [shard(store, 0, 0, 2), shard(store, 1, 2, 2), shard(store, 2, 4, 1)]}
    out = load_split(store, WHAT, "train", entry, SHAPES, DTYPES)
    assert set(out) == {"image", "seed"}
    assert out["image"].dtype == np.uint16 and out["image"].shape == (5, 4, 3)
    assert out["image"][:, 0, 0].tolist() == [0, 1, 2, 3, 4] and (out["image"][3] == 3).all()
    assert out["seed"].dtype == np.int64 and out["seed"].tolist() == [0, 10, 20, 30, 40]


def test_a_corrupted_shard_is_an_integrity_error(store: LocalStore) -> None:
    entry = {"count": 3, "shards": [shard(store, 0, 0, 2), shard(store, 1, 2, 1)]}
    key = entry["shards"][1]["key"]
    data = bytearray(store.get_bytes(key))
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    store.put_bytes(key, bytes(data))
    with pytest.raises(IntegrityError, match="shard-00001.npz"):
        load_split(store, WHAT, "train", entry, SHAPES, DTYPES)


def test_a_valid_npz_that_is_not_the_recorded_shard_is_an_integrity_error(store: LocalStore) -> None:
    entry = {"count": 2, "shards": [shard(store, 0, 0, 2)]}
    shard(store, 0, 7, 2)  # rewritten with other content: its sha256 no longer matches the manifest
    with pytest.raises(IntegrityError):
        load_split(store, WHAT, "train", entry, SHAPES, DTYPES)


@pytest.mark.parametrize(
    ("entry_count", "override", "message"),
    [
        (2, {"extra": np.zeros(2)}, "does not match its manifest"),  # other arrays
        (1, {}, "does not match its manifest"),  # more images than the split holds
        (3, {}, "split 'train' holds 2 images, the manifest 3"),  # fewer
        (2, {"image": np.zeros((2, 3, 4), np.uint16)}, "image of datasets/toy/train/shard-00000.npz has shape (2, 3, 4)"),
    ],
)
def test_a_shard_that_disagrees_with_the_manifest_is_an_integrity_error(
    store: LocalStore, entry_count: int, override: dict, message: str
) -> None:
    entry = {"count": entry_count, "shards": [shard(store, 0, 0, 2, **override)]}
    with pytest.raises(IntegrityError) as raised:
        load_split(store, WHAT, "train", entry, SHAPES, DTYPES)
    assert message in str(raised.value)

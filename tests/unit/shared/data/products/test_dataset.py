"""Product datasets round-trip through the real LocalStore, manifest last, reused, never clobbered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from twinray.shared.data.dataset_io import manifest_key
from twinray.shared.data.products import DEFECT_KINDS
from twinray.shared.data.products.dataset import read_product_manifest, read_product_split, render_sample, write_product_dataset
from twinray.shared.platform.errors import IntegrityError, InvalidInput, NotFound
from twinray.shared.platform.storage.local import LocalStore

SPLITS = {"train_normal": 3, "train_defect": 5, "test_defect": 2}
PARAMS = {"category": "metal", "size": 64, "splits": SPLITS, "seed": 3, "shard_size": 2, "progress": False}


class Writes(list):
    """Keys written to any LocalStore, in order; setting `fail_at` makes that write raise OSError."""

    fail_at: int | None = None


@pytest.fixture()
def writes(monkeypatch: pytest.MonkeyPatch) -> Writes:
    writes, put_bytes = Writes(), LocalStore.put_bytes

    def recording(self: LocalStore, key: str, data: bytes, **kwargs):
        if len(writes) == writes.fail_at:
            raise OSError("disk full")
        writes.append(key)
        return put_bytes(self, key, data, **kwargs)

    monkeypatch.setattr(LocalStore, "put_bytes", recording)
    return writes


@pytest.fixture()
def store(tmp_path: Path, writes: Writes) -> LocalStore:
    return LocalStore(tmp_path / "store", "test")


def test_round_trip_matches_the_renderer(store: LocalStore, writes: Writes) -> None:
    manifest = write_product_dataset(store, "parts", **PARAMS)
    assert writes[-1] == manifest_key("parts"), "the manifest is written last"
    assert manifest["category"] == "metal" and manifest["kind_names"] == list(DEFECT_KINDS)
    assert {s: e["count"] for s, e in manifest["splits"].items()} == SPLITS
    assert manifest["splits"]["train_defect"]["kind_counts"] == {kind: 1 for kind in DEFECT_KINDS}
    assert [len(manifest["splits"][s]["shards"]) for s in SPLITS] == [2, 3, 1]
    for split, count in SPLITS.items():
        arrays = read_product_split(store, "parts", split)
        assert len(arrays) == count and arrays.image.dtype == np.uint16 and arrays.mask.dtype == bool
        assert arrays.image.shape == arrays.mask.shape == (count, 64, 64)
        for i in range(count):
            kind = None if arrays.kind[i] < 0 else arrays.kind_of(i)
            image, mask = render_sample("metal", 64, int(arrays.surface_seed[i]), kind, int(arrays.defect_seed[i]))
            np.testing.assert_allclose(arrays.float_image(i), image, atol=0.5 / 65535 + 1e-7)
            np.testing.assert_array_equal(arrays.mask[i], mask)
            assert mask.any() == split.endswith("defect")
    normal = read_product_split(store, "parts", "train_normal")
    assert (normal.kind == -1).all() and (normal.defect_seed == -1).all() and not normal.mask.any()
    defect = read_product_split(store, "parts", "train_defect")
    assert [defect.kind_of(i) for i in range(5)] == list(DEFECT_KINDS)
    assert defect.defect_rows().tolist() == [0, 1, 2, 3, 4] and defect.defect_rows(2).tolist() == [0, 1]
    assert normal.defect_rows().tolist() == []
    seeds = np.concatenate([read_product_split(store, "parts", s).surface_seed for s in SPLITS])
    assert len(set(seeds.tolist())) == len(seeds), "no surface is shared between splits"


def test_identical_request_reuses_and_other_parameters_are_refused(store: LocalStore, writes: Writes) -> None:
    first = write_product_dataset(store, "parts", **PARAMS)
    count = len(writes)
    assert write_product_dataset(store, "parts", **PARAMS) == first
    assert len(writes) == count, "nothing rewritten"
    for change in ({"seed": 4}, {"category": "fabric"}, {"defect_kinds": ("hole",)}, {"splits": {"train_normal": 4}}):
        with pytest.raises(InvalidInput, match="already exists with other parameters"):
            write_product_dataset(store, "parts", **{**PARAMS, **change})
    assert len(writes) == count


def test_a_request_that_only_adds_splits_renders_just_those(store: LocalStore, writes: Writes) -> None:
    """An older dataset gains the val splits of a newer TwinRay; its own splits stay byte for byte."""
    first = write_product_dataset(store, "parts", **PARAMS)
    count = len(writes)
    more = {**SPLITS, "val_normal": 1, "val_defect": 3}
    manifest = write_product_dataset(store, "parts", **{**PARAMS, "splits": more})
    assert writes[count:] == [
        *(f"datasets/parts/{s}/shard-0000{i}.npz" for s, n in (("val_defect", 2), ("val_normal", 1)) for i in range(n)),
        manifest_key("parts"),
    ]
    assert {s: e["count"] for s, e in manifest["splits"].items()} == more
    assert all(manifest["splits"][split] == first["splits"][split] for split in SPLITS)
    assert read_product_split(store, "parts", "val_defect").mask.any(axis=(1, 2)).all()
    assert write_product_dataset(store, "parts", **{**PARAMS, "splits": more}) == manifest  # now simply reused
    with pytest.raises(InvalidInput, match="already exists with other parameters"):  # dropping a split is not adding
        write_product_dataset(store, "parts", **PARAMS)


def test_crash_leaves_no_manifest_then_rewrites(store: LocalStore, writes: Writes) -> None:
    writes.fail_at = 2
    with pytest.raises(OSError, match="disk full"):
        write_product_dataset(store, "parts", **PARAMS)
    with pytest.raises(NotFound, match="no product dataset 'parts'"):
        read_product_manifest(store, "parts")
    writes.fail_at = None
    manifest = write_product_dataset(store, "parts", **PARAMS)
    assert manifest["splits"]["test_defect"]["count"] == 2


def test_lost_shard_is_rewritten(store: LocalStore, writes: Writes) -> None:
    manifest = write_product_dataset(store, "parts", **PARAMS)
    before = read_product_split(store, "parts", "train_normal")
    store.delete(manifest["splits"]["train_normal"]["shards"][0]["key"])
    count = len(writes)
    write_product_dataset(store, "parts", **PARAMS)
    assert len(writes) == count + 7 and writes[-1] == manifest_key("parts")  # 6 shards, then the manifest
    after = read_product_split(store, "parts", "train_normal")
    np.testing.assert_array_equal(after.image, before.image)  # same seeds, same pixels
    np.testing.assert_array_equal(after.surface_seed, before.surface_seed)


def test_corrupt_shard_is_detected(store: LocalStore) -> None:
    manifest = write_product_dataset(store, "parts", **PARAMS)
    key = manifest["splits"]["train_defect"]["shards"][1]["key"]
    data = bytearray(store.get_bytes(key))
    data[len(data) // 2] ^= 0xFF
    store.put_bytes(key, bytes(data))
    with pytest.raises(IntegrityError, match="corrupt"):
        read_product_split(store, "parts", "train_defect")
    read_product_split(store, "parts", "train_normal")  # the other splits still read


def test_tampered_manifest_and_missing_split(store: LocalStore) -> None:
    write_product_dataset(store, "parts", **PARAMS)
    with pytest.raises(NotFound, match="no split 'val_normal'"):
        read_product_split(store, "parts", "val_normal")
    manifest = json.loads(store.get_bytes(manifest_key("parts")))
    manifest["kind_names"] = ["scratch"]
    store.put_bytes(manifest_key("parts"), json.dumps(manifest).encode())
    with pytest.raises(InvalidInput, match="defect kinds"):
        read_product_split(store, "parts", "train_normal")
    store.put_bytes(manifest_key("parts"), b"{not json")
    with pytest.raises(InvalidInput, match="not JSON"):
        read_product_manifest(store, "parts")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "bad/name"}, "invalid dataset name 'bad/name'"),
        ({"splits": {}}, "splits must be a non-empty mapping"),
        ({"splits": {"train": 3}}, "split 'train' must end in 'normal' or 'defect'"),
        ({"splits": {"test_defect": 0}}, "positive image count"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"defect_kinds": ()}, "defect_kinds must be distinct kinds"),
        ({"defect_kinds": ("hole", "hole")}, "defect_kinds must be distinct kinds"),
        ({"defect_kinds": ("hole", "dent")}, "unknown defect kind 'dent'"),
        ({"shard_size": 0}, "shard_size must be a positive integer"),
        ({"category": "wood"}, "unknown product category 'wood'"),
        ({"size": 8}, "size must be an integer in 32..2048"),
    ],
)
def test_bad_parameters_are_invalid_input(store: LocalStore, writes: Writes, change: dict, message: str) -> None:
    arguments = {"name": "parts", **PARAMS, **change}
    with pytest.raises(InvalidInput, match=message):
        write_product_dataset(store, **arguments)
    assert writes == []

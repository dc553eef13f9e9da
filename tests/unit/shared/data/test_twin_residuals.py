"""Twin-residual datasets: float16 shards + manifest last, rows in source order, verified on read,
reused for the same provenance and never overwritten by another."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from twinray.shared.data.dataset_io import manifest_key
from twinray.shared.data.twin_residuals import (
    TWIN_RESIDUALS_FORMAT,
    TwinResidualShard,
    read_twin_residual_manifest,
    read_twin_residuals,
    write_twin_residual_dataset,
)
from twinray.shared.platform.errors import IntegrityError, InvalidInput, NotFound
from twinray.shared.platform.storage import LocalStore

SIZE = 8
SOURCE = {"dataset": "phantoms", "manifest_sha256": "0" * 64}
MODEL = {"name": "matching-pairs", "version": 1, "weights_sha256": "1" * 64}


def _residuals(count: int, seed: int) -> np.ndarray:
    """float32 residuals uniform in [-1, 1], the whole range image - twin can take."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (count, SIZE, SIZE)).astype(np.float32)


def _shards(residual: np.ndarray, shard_size: int) -> list[TwinResidualShard]:
    return [
        TwinResidualShard(
            residual=residual[start : start + shard_size].astype(np.float16),
            index=np.arange(start, min(start + shard_size, len(residual))),
        )
        for start in range(0, len(residual), shard_size)
    ]


def _write(store: LocalStore, splits: dict[str, np.ndarray], name: str = "res", model: dict = MODEL, shard_size: int = 2) -> dict:
    shards = {split: _shards(residual, shard_size) for split, residual in splits.items()}
    return write_twin_residual_dataset(store, name, shards, size=SIZE, source=SOURCE, model=model)


@pytest.fixture
def local_store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store", "twinray")


def test_round_trip_keeps_every_split_in_source_order_within_the_float16_bound(local_store: LocalStore) -> None:
    splits = {"train": _residuals(5, 0), "val": _residuals(3, 1), "test": _residuals(1, 2)}
    manifest = _write(local_store, splits)
    assert manifest["format"] == TWIN_RESIDUALS_FORMAT and manifest["name"] == "res" and manifest["size"] == SIZE
    assert (manifest["source"], manifest["model"]) == (SOURCE, MODEL)
    assert {split: entry["count"] for split, entry in manifest["splits"].items()} == {"train": 5, "val": 3, "test": 1}
    assert [len(manifest["splits"][split]["shards"]) for split in ("train", "val", "test")] == [3, 2, 1]
    assert local_store.list("datasets/res/train/") == [f"datasets/res/train/shard-0000{i}.npz" for i in range(3)]
    assert read_twin_residual_manifest(local_store, "res") == manifest
    worst = 0.0
    for split, residual in splits.items():
        stored = read_twin_residuals(local_store, "res", split)
        assert stored.dtype == np.float32 and stored.shape == residual.shape
        error = np.abs(stored - residual)
        # round to nearest with 10 fraction bits: |error| <= |r| * 2**-11 (2**-25 for subnormals)
        assert (error <= np.abs(residual) * 2.0**-11 + 2.0**-25).all()
        # below 1/32 that is within half the 16-bit image quantum
        small = np.abs(residual) < 1 / 32
        assert (error[small] <= 0.5 / 65535).all()
        np.testing.assert_array_equal(stored, residual.astype(np.float16).astype(np.float32))  # row i is row i
        worst = max(worst, float(error.max()))
    assert 0 < worst <= 2.0**-12  # measured: 2.4e-4, the bound to 0.1%


def test_writer_rejects_what_does_not_fit_the_format(local_store: LocalStore) -> None:
    residual = _residuals(4, 0)
    as_float32 = [TwinResidualShard(residual=residual, index=np.arange(4))]
    with pytest.raises(InvalidInput, match="float16"):
        write_twin_residual_dataset(local_store, "res", {"train": as_float32}, size=SIZE, source=SOURCE, model=MODEL)
    with pytest.raises(InvalidInput, match=r"float16 \(N, 16, 16\)"):
        write_twin_residual_dataset(local_store, "res", {"train": _shards(residual, 2)}, size=16, source=SOURCE, model=MODEL)
    shuffled = _shards(residual, 2)[::-1]
    with pytest.raises(InvalidInput, match="rows 0..1 of the source split in order"):
        write_twin_residual_dataset(local_store, "res", {"train": shuffled}, size=SIZE, source=SOURCE, model=MODEL)
    with pytest.raises(InvalidInput, match="split 'val' has nothing to write"):
        write_twin_residual_dataset(local_store, "res", {"val": []}, size=SIZE, source=SOURCE, model=MODEL)
    with pytest.raises(InvalidInput, match="no split to write"):
        write_twin_residual_dataset(local_store, "res", {}, size=SIZE, source=SOURCE, model=MODEL)
    with pytest.raises(InvalidInput, match="invalid dataset name"):
        write_twin_residual_dataset(local_store, "../res", {"train": _shards(residual, 2)}, size=SIZE, source=SOURCE, model=MODEL)
    assert not local_store.exists(manifest_key("res"))


def test_same_provenance_reuses_and_other_provenance_is_refused(local_store: LocalStore) -> None:
    first = _write(local_store, {"train": _residuals(3, 0)})

    def never():
        raise AssertionError("a reusable dataset must not be recomputed")
        yield

    assert write_twin_residual_dataset(local_store, "res", {"train": never()}, size=SIZE, source=SOURCE, model=MODEL) == first
    newer = {**MODEL, "version": 2, "weights_sha256": "2" * 64}
    for model, source, splits in (
        (newer, SOURCE, ["train"]),
        (MODEL, {**SOURCE, "manifest_sha256": "3" * 64}, ["train"]),
        (MODEL, SOURCE, ["train", "val"]),
    ):
        with pytest.raises(InvalidInput, match="already exists with other parameters"):
            write_twin_residual_dataset(local_store, "res", {s: never() for s in splits}, size=SIZE, source=source, model=model)
    assert read_twin_residual_manifest(local_store, "res") == first  # never overwritten


def test_a_dataset_that_lost_a_shard_is_rewritten(local_store: LocalStore) -> None:
    residual = _residuals(4, 0)
    manifest = _write(local_store, {"train": residual})
    local_store.delete(manifest["splits"]["train"]["shards"][1]["key"])
    _write(local_store, {"train": residual})
    np.testing.assert_array_equal(
        read_twin_residuals(local_store, "res", "train"), residual.astype(np.float16).astype(np.float32)
    )


def test_corrupt_shards_missing_datasets_and_other_kinds_are_precise_errors(local_store: LocalStore) -> None:
    manifest = _write(local_store, {"train": _residuals(4, 0)})
    key = manifest["splits"]["train"]["shards"][1]["key"]
    local_store.put_bytes(key, b"not an npz")
    with pytest.raises(IntegrityError, match="is corrupt: sha256"):
        read_twin_residuals(local_store, "res", "train")
    with pytest.raises(NotFound, match=r"no twin-residual dataset 'absent'.*write_twin_residuals"):
        read_twin_residuals(local_store, "absent", "train")
    with pytest.raises(NotFound, match=r"has no split 'val' \(it has \['train'\]\)"):
        read_twin_residuals(local_store, "res", "val")
    local_store.put_bytes(manifest_key("phantoms"), json.dumps({**manifest, "format": "twinray.cxr-phantoms/2"}).encode())
    with pytest.raises(InvalidInput, match="its format is 'twinray.cxr-phantoms/2', this code reads 'twinray.twin-residuals/1'"):
        read_twin_residuals(local_store, "phantoms", "train")
    local_store.put_bytes(manifest_key("bare"), json.dumps({**manifest, "model": {"name": "matching-pairs"}}).encode())
    with pytest.raises(InvalidInput, match="its model needs name, version and weights_sha256"):
        read_twin_residuals(local_store, "bare", "train")


def test_rows_out_of_source_order_are_an_integrity_error(local_store: LocalStore) -> None:
    """A shard whose sha256 matches (a writer that skipped the checks) but that holds other rows."""
    manifest = _write(local_store, {"train": _residuals(4, 0)}, shard_size=4)
    shard = manifest["splits"]["train"]["shards"][0]
    buffer = io.BytesIO()
    np.savez_compressed(buffer, residual=_residuals(4, 0).astype(np.float16), index=np.array([1, 0, 2, 3]))
    ref = local_store.put_bytes(shard["key"], buffer.getvalue())
    shard.update(sha256=ref.sha256, bytes=ref.size)
    local_store.put_bytes(manifest_key("res"), json.dumps(manifest).encode())
    with pytest.raises(IntegrityError, match="does not hold the rows of its source split in order"):
        read_twin_residuals(local_store, "res", "train")

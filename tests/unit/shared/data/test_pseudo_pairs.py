"""Pseudo-pair datasets: stored shards + manifest last, verified on read, reused or replaced."""

from __future__ import annotations

import numpy as np
import pytest

from twinray.shared.data.dataset_io import manifest_key
from twinray.shared.data.pseudo_pairs import PseudoPairShard, read_pseudo_pairs, write_pseudo_pair_dataset
from twinray.shared.platform.errors import IntegrityError, InvalidInput, NotFound
from twinray.shared.platform.storage import LocalStore

SOURCE = {"dataset": "phantoms", "split": "train", "manifest_sha256": "0" * 64}
TRANSLATOR = {"name": "matching-pairs", "version": 1, "weights_sha256": "1" * 64}


def _shard(start: int, abnormal: int, normal: int, size: int = 8) -> PseudoPairShard:
    rng = np.random.default_rng(start)
    images = lambda n: rng.integers(0, 65536, (n, size, size), dtype=np.uint16)  # noqa: E731
    return PseudoPairShard(
        abnormal=images(abnormal),
        pseudo_normal=images(abnormal),
        abnormal_person_seed=np.arange(abnormal) + 100 * start,
        abnormal_index=np.arange(abnormal) + start,
        normal=images(normal),
        normal_person_seed=np.arange(normal) + 100 * start + 50,
        normal_index=np.arange(normal) + start + abnormal,
    )


@pytest.fixture
def local_store(tmp_path):
    return LocalStore(tmp_path / "store", "twinray")


def test_round_trip_concatenates_shards(local_store):
    shards = [_shard(0, 3, 2), _shard(5, 1, 4)]
    manifest = write_pseudo_pair_dataset(local_store, "pp", shards, size=8, source=SOURCE, translator=TRANSLATOR)
    assert manifest["counts"] == {"abnormal": 4, "normal": 6}
    assert local_store.list("datasets/pp/")[-1] == "datasets/pp/train/shard-00001.npz"
    pairs = read_pseudo_pairs(local_store, "pp")
    np.testing.assert_array_equal(pairs.abnormal, np.concatenate([s.abnormal for s in shards]))
    np.testing.assert_array_equal(pairs.pseudo_normal, np.concatenate([s.pseudo_normal for s in shards]))
    np.testing.assert_array_equal(pairs.normal_index, np.concatenate([s.normal_index for s in shards]))
    assert pairs.abnormal.dtype == np.uint16 and pairs.normal.shape == (6, 8, 8)
    assert (pairs.source, pairs.translator) == (SOURCE, TRANSLATOR)


def test_same_source_and_translator_reuse_the_stored_dataset(local_store):
    first = write_pseudo_pair_dataset(local_store, "pp", [_shard(0, 2, 2)], size=8, source=SOURCE, translator=TRANSLATOR)

    def never():
        raise AssertionError("a reusable dataset must not be regenerated")
        yield

    assert write_pseudo_pair_dataset(local_store, "pp", never(), size=8, source=SOURCE, translator=TRANSLATOR) == first


def test_another_translator_replaces_the_dataset(local_store):
    write_pseudo_pair_dataset(local_store, "pp", [_shard(0, 2, 2), _shard(1, 2, 2)], size=8, source=SOURCE, translator=TRANSLATOR)
    newer = {**TRANSLATOR, "version": 2}
    write_pseudo_pair_dataset(local_store, "pp", [_shard(7, 1, 1)], size=8, source=SOURCE, translator=newer)
    pairs = read_pseudo_pairs(local_store, "pp")
    assert pairs.translator == newer and len(pairs.abnormal) == 1
    assert not local_store.exists("datasets/pp/train/shard-00001.npz")  # no stale shard left behind


def test_corrupt_shard_missing_dataset_and_wrong_kind_are_precise_errors(local_store):
    manifest = write_pseudo_pair_dataset(local_store, "pp", [_shard(0, 2, 2)], size=8, source=SOURCE, translator=TRANSLATOR)
    local_store.put_bytes(manifest["shards"][0]["key"], b"not an npz")
    with pytest.raises(IntegrityError):
        read_pseudo_pairs(local_store, "pp")
    with pytest.raises(NotFound, match="no pseudo-pair dataset 'absent'"):
        read_pseudo_pairs(local_store, "absent")
    local_store.put_bytes(manifest_key("phantoms"), b'{"format": "twinray.cxr-phantoms/1"}')
    with pytest.raises(InvalidInput, match="not a pseudo-pair dataset"):
        read_pseudo_pairs(local_store, "phantoms")


def test_writer_rejects_arrays_that_do_not_fit_the_format(local_store):
    bad = _shard(0, 2, 2)
    with pytest.raises(InvalidInput, match="uint16"):
        write_pseudo_pair_dataset(local_store, "pp", [bad], size=16, source=SOURCE, translator=TRANSLATOR)
    with pytest.raises(InvalidInput, match="nothing to write"):
        write_pseudo_pair_dataset(local_store, "pp", [], size=8, source=SOURCE, translator=TRANSLATOR)
    assert not local_store.exists(manifest_key("pp"))

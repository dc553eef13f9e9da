"""Synthetic abnormal datasets: shards + manifest last, read back as written (the first k images
from the shards that hold them), malformed shards and manifests refused with what to do."""

from __future__ import annotations

import json

import numpy as np
import pytest

from twinray.shared.data.dataset_io import manifest_key
from twinray.shared.data.synthetic_abnormal import (
    SYNTHETIC_ABNORMAL_FORMAT,
    SyntheticAbnormalShard,
    read_synthetic_abnormal,
    read_synthetic_abnormal_manifest,
    write_synthetic_abnormal_dataset,
)
from twinray.shared.platform.errors import IntegrityError, InvalidInput
from twinray.shared.platform.storage.base import ArtifactStore

SIZE, MAX_BOXES = 8, 3
IDENTITY = {"name": "x", "version": 1, "weights_sha256": "1" * 64}
PARAMETERS = {
    "size": SIZE,
    "max_boxes": MAX_BOXES,
    "source": {"dataset": "phantoms", "split": "train", "manifest_sha256": "0" * 64},
    "model": {**IDENTITY, "name": "matching-pairs"},
    "segmenter": {**IDENTITY, "name": "segmentation"},
    "seed": 0,
    "method": {"support_threshold": 0.01},
}


def _shard(start: int, count: int) -> SyntheticAbnormalShard:
    rng = np.random.default_rng(start)
    boxes, classes = np.zeros((count, MAX_BOXES, 4), np.float32), np.full((count, MAX_BOXES), -1, np.int8)
    boxes[:, 0], classes[:, 0] = [1, 2, 5, 6], start % 4
    return SyntheticAbnormalShard(
        image=rng.integers(0, 65536, (count, SIZE, SIZE)).astype(np.uint16),
        residual=rng.uniform(-1, 1, (count, SIZE, SIZE)).astype(np.float16),
        boxes=boxes,
        box_count=np.ones(count, np.int32),
        lesion_classes=classes,
        source_index=np.arange(start, start + count),
        normal_index=np.arange(start, start + count) + 100,
    )


def test_round_trip_and_the_first_images_only(store: ArtifactStore) -> None:
    shards = [_shard(0, 2), _shard(2, 2), _shard(4, 1)]
    manifest = write_synthetic_abnormal_dataset(store, "syn", shards, count=5, **PARAMETERS)
    assert manifest["format"] == SYNTHETIC_ABNORMAL_FORMAT and manifest["splits"]["train"]["count"] == 5
    assert read_synthetic_abnormal_manifest(store, "syn") == manifest
    data = read_synthetic_abnormal(store, "syn")
    np.testing.assert_array_equal(data.image, np.concatenate([s.image for s in shards]))
    np.testing.assert_array_equal(data.residual, np.concatenate([s.residual for s in shards]).astype(np.float32))
    np.testing.assert_array_equal(data.source_index, np.arange(5))
    assert data.boxes_of(4).tolist() == [[1, 2, 5, 6]] and data.residual.dtype == np.float32
    store.put_bytes(manifest["splits"]["train"]["shards"][2]["key"], b"corrupt")  # the first 3 images never read it
    np.testing.assert_array_equal(read_synthetic_abnormal(store, "syn", count=3).normal_index, [100, 101, 102])
    with pytest.raises(IntegrityError):
        read_synthetic_abnormal(store, "syn")


def test_malformed_shards_counts_and_manifests_are_refused(store: ArtifactStore) -> None:
    bad = _shard(0, 2)
    bad = SyntheticAbnormalShard(**{**bad.__dict__, "image": bad.image.astype(np.float16)})
    with pytest.raises(InvalidInput, match="image must be uint16"):
        write_synthetic_abnormal_dataset(store, "bad", [bad], count=2, **PARAMETERS)
    with pytest.raises(InvalidInput, match="the shards hold 2 images, 3 were asked"):
        write_synthetic_abnormal_dataset(store, "short", [_shard(0, 2)], count=3, **PARAMETERS)
    write_synthetic_abnormal_dataset(store, "other", [_shard(0, 1)], count=1, **PARAMETERS)
    with pytest.raises(InvalidInput, match="already exists with other parameters"):
        write_synthetic_abnormal_dataset(store, "other", [_shard(0, 1)], count=1, **{**PARAMETERS, "seed": 1})
    manifest = json.loads(store.get_bytes(manifest_key("other")))
    del manifest["segmenter"]["weights_sha256"]
    store.put_bytes(manifest_key("other"), json.dumps(manifest).encode())
    with pytest.raises(InvalidInput, match="its segmenter needs name, version and weights_sha256"):
        read_synthetic_abnormal(store, "other")
    store.put_bytes(manifest_key("other"), json.dumps({**manifest, "format": "twinray.twin-residuals/1"}).encode())
    with pytest.raises(InvalidInput, match="its format is 'twinray.twin-residuals/1'"):
        read_synthetic_abnormal(store, "other")

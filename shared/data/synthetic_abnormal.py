"""Synthetic abnormal datasets in the artifact store: normal training images with lesions carried in,
their boxes and classes, and their twin residuals (writing them:
twinray.shared.synthesis.synthetic_abnormal.write_synthetic_abnormal).

The detector trains on them beside the real training split, so a dataset records what it was made
from (the source phantom dataset and split, the twin model, the segmenter that placed the lesions)
and the trainer refuses one made from another dataset or twin. The contract is
twinray.shared.data.dataset_io's: npz shards listed with their sha256 in a manifest written LAST,
verified on read; a complete dataset with the same parameters is reused, one with others is refused.

Layout: datasets/<name>/train/shard-00000.npz ... and datasets/<name>/manifest.json. A shard holds
`image` uint16 (N,H,W) (intensity * 65535, as phantoms are: float16 would round an image near white
by 32 of its quanta), `residual` float16 (N,H,W) (synthetic - twin(synthetic), as
twinray.shared.data.twin_residuals stores it and for the same reason), `boxes` float32 (N,max_boxes,4)
x_min, y_min, x_max, y_max in pixel edges, the first box_count[i] real, `box_count` int32 (N,),
`lesion_classes` int8 (N,max_boxes) (PATHOLOGIES indices, -1 padding), `source_index` and
`normal_index` int64 (N,): the rows of the source split the lesions came from and were carried into
(with the manifest, what reproduces the image). The manifest holds `format`, `name`, `size`,
`max_boxes`, `source` {dataset, split, manifest_sha256}, `model` (the twin, as a twin-residual
dataset records it), `segmenter` {name, version, weights_sha256}, `seed`, `count`, `method`
{placement, support_threshold}, `splits` and `created_at`.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable

import numpy as np

from twinray.shared.data.dataset_io import (
    commit_manifest,
    load_split,
    manifest_key,
    reusable,
    shard_key,
    split_entry,
    stored_parameters,
    validated_manifest,
)
from twinray.shared.platform.errors import InvalidInput, NotFound
from twinray.shared.platform.storage.base import ArtifactStore

SYNTHETIC_ABNORMAL_FORMAT = "twinray.synthetic-abnormal/1"
WHAT = "synthetic abnormal dataset"
SPLIT = "train"
_PARAMETERS = ("format", "size", "max_boxes", "source", "model", "segmenter", "seed", "count", "method")
_MANIFEST_KEYS = (*_PARAMETERS, "name", "splits", "created_at")
_DTYPES = {
    "image": np.uint16,
    "residual": np.float16,
    "boxes": np.float32,
    "box_count": np.int32,
    "lesion_classes": np.int8,
    "source_index": np.int64,
    "normal_index": np.int64,
}


@dataclasses.dataclass(frozen=True)
class SyntheticAbnormalShard:
    """Consecutive synthetic images before they are stored (arrays as the module docstring says)."""

    image: np.ndarray
    residual: np.ndarray
    boxes: np.ndarray
    box_count: np.ndarray
    lesion_classes: np.ndarray
    source_index: np.ndarray
    normal_index: np.ndarray


@dataclasses.dataclass(frozen=True)
class SyntheticAbnormal:
    """The first images of a stored dataset in memory; reads like the phantom split it augments
    (`boxes_of`, `box_count`, `lesion_classes`)."""

    image: np.ndarray  # uint16 (N, H, W)
    residual: np.ndarray  # float32 (N, H, W), synthetic - twin(synthetic)
    boxes: np.ndarray  # float32 (N, max_boxes, 4)
    box_count: np.ndarray  # int32 (N,)
    lesion_classes: np.ndarray  # int8 (N, max_boxes)
    source_index: np.ndarray  # int64 (N,)
    normal_index: np.ndarray  # int64 (N,)
    manifest: dict

    def __len__(self) -> int:
        return len(self.image)

    def boxes_of(self, index: int) -> np.ndarray:
        """The (count, 4) lesion boxes of image `index`."""
        return self.boxes[index, : self.box_count[index]]


def _check_manifest(manifest: dict) -> str:
    if not isinstance(manifest["source"], dict) or not {"dataset", "split", "manifest_sha256"} <= manifest["source"].keys():
        return "its source needs dataset, split and manifest_sha256"
    for key in ("model", "segmenter"):
        if not isinstance(manifest[key], dict) or not {"name", "version", "weights_sha256"} <= manifest[key].keys():
            return f"its {key} needs name, version and weights_sha256"
    if not isinstance(manifest["splits"], dict) or set(manifest["splits"]) != {SPLIT}:
        return f"it must hold exactly one split, {SPLIT!r}"
    return ""


def read_synthetic_abnormal_manifest(store: ArtifactStore, name: str) -> dict:
    """The validated manifest of synthetic abnormal dataset `name`: NotFound if it was never
    completed, InvalidInput if it is not one."""
    try:
        return validated_manifest(
            store, name, what=WHAT, dataset_format=SYNTHETIC_ABNORMAL_FORMAT, keys=_MANIFEST_KEYS, check=_check_manifest
        )
    except NotFound as exc:
        raise NotFound(f"{exc} (write it with `twinray data synthetic`)") from None


def _shapes(size: int, max_boxes: int) -> dict[str, tuple[int, ...]]:
    image = (size, size)
    return {
        "image": image,
        "residual": image,
        "boxes": (max_boxes, 4),
        "box_count": (),
        "lesion_classes": (max_boxes,),
        "source_index": (),
        "normal_index": (),
    }


def _shard_bytes(name: str, shard: SyntheticAbnormalShard, size: int, max_boxes: int) -> bytes:
    arrays = dataclasses.asdict(shard)
    count = len(shard.image)
    for key, shape in _shapes(size, max_boxes).items():
        if arrays[key].dtype != _DTYPES[key] or arrays[key].shape != (count, *shape):
            raise InvalidInput(
                f"{WHAT} {name!r}: {key} must be {np.dtype(_DTYPES[key])} {(count, *shape)}, "
                f"got {arrays[key].dtype} {arrays[key].shape}"
            )
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def write_synthetic_abnormal_dataset(
    store: ArtifactStore,
    name: str,
    shards: Iterable[SyntheticAbnormalShard],
    *,
    size: int,
    max_boxes: int,
    source: dict,
    model: dict,
    segmenter: dict,
    seed: int,
    count: int,
    method: dict,
) -> dict:
    """Store `shards` (`count` images in all) as dataset `name`, then its manifest; return the
    manifest. `shards` is consumed only when nothing reusable is stored: a complete dataset of that
    name with these parameters is returned as it is; one with others is InvalidInput."""
    parameters = {"size": size, "max_boxes": max_boxes, "source": source, "model": model, "segmenter": segmenter}
    parameters |= {"seed": seed, "count": count, "method": method}
    wanted = {"format": SYNTHETIC_ABNORMAL_FORMAT, **parameters, "splits": {SPLIT: count}}
    if store.exists(manifest_key(name)):
        existing = read_synthetic_abnormal_manifest(store, name)
        if reusable(store, f"{WHAT} {name!r}", existing, stored_parameters(existing, _PARAMETERS), wanted):
            return existing
    listed, stored = [], 0
    for index, shard in enumerate(shards):
        ref = store.put_bytes(shard_key(name, SPLIT, index), _shard_bytes(name, shard, size, max_boxes))
        listed.append({"key": ref.key, "sha256": ref.sha256, "count": len(shard.image), "bytes": ref.size})
        stored += len(shard.image)
    if stored != count or not count:
        raise InvalidInput(f"{WHAT} {name!r}: the shards hold {stored} images, {count} were asked")
    manifest = {**{key: wanted[key] for key in _PARAMETERS}, "name": name, "splits": {SPLIT: {"count": count, "shards": listed}}}
    return commit_manifest(store, name, manifest, WHAT)


def read_synthetic_abnormal(store: ArtifactStore, name: str, count: int | None = None) -> SyntheticAbnormal:
    """The first `count` images (all when None) of dataset `name`, every shard verified against its
    manifest sha256; InvalidInput when it holds fewer."""
    manifest = read_synthetic_abnormal_manifest(store, name)
    entry = split_entry(manifest, name, SPLIT, WHAT)
    count = entry["count"] if count is None else count
    if not isinstance(count, int) or not 0 <= count <= entry["count"]:
        raise InvalidInput(
            f"{WHAT} {name!r} holds {entry['count']} images, {count!r} were asked: write a larger one with `twinray data synthetic --count`"
        )
    needed, held = [], 0
    for shard in entry["shards"]:  # only the shards that hold the first `count` images
        if held >= count:
            break
        needed.append(shard)
        held += shard["count"]
    shapes = _shapes(manifest["size"], manifest["max_boxes"])
    arrays = load_split(store, f"{WHAT} {name!r}", SPLIT, {"count": held, "shards": needed}, shapes, _DTYPES)
    first = {key: value[:count] for key, value in arrays.items()}
    return SyntheticAbnormal(**{**first, "residual": first["residual"].astype(np.float32)}, manifest=manifest)

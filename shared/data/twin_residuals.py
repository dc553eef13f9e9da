"""Healthy-twin residual datasets in the artifact store: image - twin of every phantom, computed ONCE.

The lesion detector reads the residual image - twin beside the image. Its training must not rerun a
twin model every epoch, so a published twin model's residuals are stored per split of a phantom
dataset (writing them: twinray.shared.synthesis.twin_residuals.write_twin_residuals). The contract is
twinray.shared.data.dataset_io's: npz shards listed with their sha256 in a manifest written LAST (the
commit point), verified on read; a complete dataset of the same provenance is reused, one of that
name with any other provenance is refused (InvalidInput), never overwritten.

Layout: datasets/<name>/<split>/shard-00000.npz ... and datasets/<name>/manifest.json. A shard holds
`residual` float16 (N,H,W), image - twin on the [0, 1] intensity scale (signed: a removed lesion is
positive, density put back negative), and `index` int64 (N,), the row in the source split; a split
holds every row of its source split, in order. The manifest holds `format`, `name`, `size`,
`source` {dataset, manifest_sha256}, `model` {name, version, weights_sha256, twin, and `segmenter`
{name, version, weights_sha256} for a twin that segments its input}, `splits` {split: {count,
shards: [{key, sha256, count, bytes}]}} and `created_at`.

Why float16 is enough: rounding to nearest in float16 (10 fraction bits) is off by at most
|r| * 2**-11 (2**-25 below 2**-14, its subnormals). For |r| < 1/32, most of an image, that is at most
2**-17, half the 16-bit intensity quantum (1/65535) of the images themselves. It is NOT so for large
residuals: for |r| in [0.25, 0.5) the error reaches 2**-13 (8 quanta), in [0.5, 1) 2**-12. But
residuals are small (a phantom lesion's contrast stays below about 0.33), and the error stays below
0.05% of the residual, far below what any twin model gets wrong. Measured: at most 1.18e-4 (7.7
quanta) on the true residuals (image - true twin) of 32 `cxr-phantom/2` phantoms at 128 px; in the
unit tests 1.22e-4 on tiny models' residuals (|r| <= 0.43) and 2.44e-4 on uniform ones in [-1, 1].
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable, Mapping

import numpy as np

from twinray.shared.data.dataset_io import (
    check_name,
    commit_manifest,
    load_split,
    manifest_key,
    reusable,
    shard_key,
    split_entry,
    validated_manifest,
)
from twinray.shared.platform.errors import IntegrityError, InvalidInput, NotFound
from twinray.shared.platform.storage.base import ArtifactStore

TWIN_RESIDUALS_FORMAT = "twinray.twin-residuals/1"
WHAT = "twin-residual dataset"
_PROVENANCE = ("format", "size", "source", "model")  # equal provenance (and splits) -> the same residuals
_MANIFEST_KEYS = (*_PROVENANCE, "name", "splits", "created_at")
_DTYPES = {"residual": np.float16, "index": np.int64}


@dataclasses.dataclass(frozen=True)
class TwinResidualShard:
    """One shard before it is stored: consecutive rows of a source split."""

    residual: np.ndarray  # float16 (N, H, W), image - twin
    index: np.ndarray  # int64 (N,), the rows of the source split


def _check_manifest(manifest: dict) -> str:
    source, model = manifest["source"], manifest["model"]
    if not isinstance(source, dict) or not {"dataset", "manifest_sha256"} <= source.keys():
        return "its source needs dataset and manifest_sha256"
    if not isinstance(model, dict) or not {"name", "version", "weights_sha256"} <= model.keys():
        return "its model needs name, version and weights_sha256"
    return ""


def read_twin_residual_manifest(store: ArtifactStore, name: str) -> dict:
    """The validated manifest of twin-residual dataset `name`: NotFound if it was never completed,
    InvalidInput if it is not one (or not readable)."""
    try:
        return validated_manifest(
            store, name, what=WHAT, dataset_format=TWIN_RESIDUALS_FORMAT, keys=_MANIFEST_KEYS, check=_check_manifest
        )
    except NotFound as exc:
        raise NotFound(f"{exc} (write it with twinray.shared.synthesis.twin_residuals.write_twin_residuals)") from None


def _shard_bytes(name: str, split: str, shard: TwinResidualShard, size: int, start: int) -> bytes:
    residual, index = shard.residual, shard.index
    if residual.dtype != np.float16 or residual.ndim != 3 or residual.shape[1:] != (size, size):
        raise InvalidInput(
            f"{WHAT} {name!r}: residual must be float16 (N, {size}, {size}), got {residual.dtype} {residual.shape}"
        )
    if index.shape != (len(residual),) or not np.array_equal(index, np.arange(start, start + len(residual))):
        raise InvalidInput(
            f"{WHAT} {name!r}: a {split} shard must hold rows {start}..{start + len(residual) - 1} of the source split "
            f"in order (every row, none skipped), got index {index.tolist()[:8]}..."
        )
    buffer = io.BytesIO()
    np.savez_compressed(buffer, residual=residual, index=index.astype(np.int64))
    return buffer.getvalue()


def write_twin_residual_dataset(
    store: ArtifactStore,
    name: str,
    shards_per_split: Mapping[str, Iterable[TwinResidualShard]],
    *,
    size: int,
    source: dict,
    model: dict,
) -> dict:
    """Store the shards of every split as dataset `name`, then its manifest; return the manifest.

    `source` is {"dataset", "manifest_sha256"} (the phantom dataset whose residuals these are),
    `model` {"name", "version", "weights_sha256", ...} (the twin model that made them). The shard
    iterables are consumed only when nothing reusable is stored: a complete dataset of that name with
    this provenance and these splits is returned as it is; one with any other is InvalidInput.
    """
    check_name(name)
    wanted = {"format": TWIN_RESIDUALS_FORMAT, "size": size, "source": source, "model": model, "splits": sorted(shards_per_split)}
    if store.exists(manifest_key(name)):
        existing = read_twin_residual_manifest(store, name)
        stored = {**{key: existing[key] for key in _PROVENANCE}, "splits": sorted(existing["splits"])}
        if reusable(store, f"{WHAT} {name!r}", existing, stored, wanted):
            return existing
    if not shards_per_split:
        raise InvalidInput(f"{WHAT} {name!r}: no split to write")
    manifest = {**{key: wanted[key] for key in _PROVENANCE}, "name": name, "splits": {}}
    for split, shards in shards_per_split.items():
        listed, count = [], 0
        for index, shard in enumerate(shards):
            ref = store.put_bytes(shard_key(name, split, index), _shard_bytes(name, split, shard, size, count))
            listed.append({"key": ref.key, "sha256": ref.sha256, "count": len(shard.residual), "bytes": ref.size})
            count += len(shard.residual)
        if not count:
            raise InvalidInput(f"{WHAT} {name!r}: split {split!r} has nothing to write")
        manifest["splits"][split] = {"count": count, "shards": listed}
    return commit_manifest(store, name, manifest, WHAT)


def read_twin_residuals(store: ArtifactStore, name: str, split: str) -> np.ndarray:
    """The residuals (image - twin) of split `split` of dataset `name`: float32 (N,H,W), row i being
    row i of the source split; every shard verified against its manifest sha256 (IntegrityError)."""
    manifest = read_twin_residual_manifest(store, name)
    entry, size = split_entry(manifest, name, split, WHAT), manifest["size"]
    arrays = load_split(store, f"{WHAT} {name!r}", split, entry, {"residual": (size, size), "index": ()}, _DTYPES)
    if not np.array_equal(arrays["index"], np.arange(entry["count"])):
        raise IntegrityError(f"{WHAT} {name!r}: split {split!r} does not hold the rows of its source split in order")
    return arrays["residual"].astype(np.float32)

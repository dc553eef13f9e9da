"""Pseudo-pair datasets in the artifact store: each abnormal image with its translated normal.

Real data never pairs a diseased radiograph with the same person's healthy one, so the
matching-pairs translator (CycleGAN) makes the pairs that normal synthesis is trained on. Normal
images are stored beside them (for identity losses). Like phantom datasets, shards are npz files
listed with their sha256 in a manifest written LAST (the commit point), and verified on read.

Layout: datasets/<name>/train/shard-00000.npz ... and datasets/<name>/manifest.json. A shard holds
`abnormal`, `pseudo_normal` (uint16 (N,H,W), intensity * 65535), `abnormal_person_seed`,
`abnormal_index` (int64 (N,), the row in the source split), `normal` (uint16 (M,H,W)),
`normal_person_seed` and `normal_index` (int64 (M,)). The manifest names the source dataset (with
its manifest's sha256) and the translator version that made the pairs.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import logging
from collections.abc import Iterable

import numpy as np

from twinray.shared.data.dataset_io import manifest_key
from twinray.shared.platform.errors import IntegrityError, InvalidInput, NotFound
from twinray.shared.platform.storage.base import ArtifactStore

log = logging.getLogger(__name__)

PSEUDO_PAIRS_FORMAT = "twinray.pseudo-pairs/1"
SPLIT = "train"
_ABNORMAL = ("abnormal", "pseudo_normal", "abnormal_person_seed", "abnormal_index")
_NORMAL = ("normal", "normal_person_seed", "normal_index")
_MANIFEST_KEYS = ("format", "name", "size", "source", "translator", "counts", "shards", "created_at")


@dataclasses.dataclass(frozen=True)
class PseudoPairShard:
    """One shard before it is stored (arrays as described in the module docstring)."""

    abnormal: np.ndarray
    pseudo_normal: np.ndarray
    abnormal_person_seed: np.ndarray
    abnormal_index: np.ndarray
    normal: np.ndarray
    normal_person_seed: np.ndarray
    normal_index: np.ndarray


@dataclasses.dataclass(frozen=True)
class PseudoPairs:
    """A whole pseudo-pair dataset in memory; `translator` is {"name", "version", "weights_sha256"}."""

    abnormal: np.ndarray  # uint16 (N, H, W)
    pseudo_normal: np.ndarray  # uint16 (N, H, W), the translation of `abnormal`
    abnormal_person_seed: np.ndarray  # int64 (N,)
    abnormal_index: np.ndarray  # int64 (N,), row in the source dataset's split
    normal: np.ndarray  # uint16 (M, H, W)
    normal_person_seed: np.ndarray  # int64 (M,)
    normal_index: np.ndarray  # int64 (M,)
    source: dict
    translator: dict
    manifest: dict


def pseudo_pairs_shard_key(name: str, index: int) -> str:
    return f"datasets/{name}/{SPLIT}/shard-{index:05d}.npz"


def read_pseudo_pair_manifest(store: ArtifactStore, name: str) -> dict:
    """The manifest of pseudo-pair dataset `name`: NotFound if it was never completed, InvalidInput
    if it is another kind of dataset."""
    try:
        manifest = json.loads(store.get_bytes(manifest_key(name)))
    except NotFound:
        raise NotFound(
            f"no pseudo-pair dataset {name!r}: {store.uri(manifest_key(name))} does not exist "
            f"(write it with twinray.shared.synthesis.pseudo_pairs.write_pseudo_pairs)"
        ) from None
    except ValueError as exc:
        raise InvalidInput(f"pseudo-pair dataset {name!r} has an invalid manifest: not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != PSEUDO_PAIRS_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise InvalidInput(f"dataset {name!r} is not a pseudo-pair dataset (format {found!r}, expected {PSEUDO_PAIRS_FORMAT!r})")
    if missing := [key for key in _MANIFEST_KEYS if key not in manifest]:
        raise InvalidInput(f"pseudo-pair dataset {name!r} has an invalid manifest: it lacks {', '.join(missing)}")
    if not isinstance(manifest["shards"], list) or not manifest["shards"]:
        raise InvalidInput(f"pseudo-pair dataset {name!r} has an invalid manifest: it lists no shards")
    return manifest


def _shard_bytes(shard: PseudoPairShard, size: int) -> bytes:
    arrays = dataclasses.asdict(shard)
    for key in ("abnormal", "pseudo_normal", "normal"):
        if arrays[key].dtype != np.uint16 or arrays[key].shape[1:] != (size, size):
            raise InvalidInput(
                f"pseudo-pair shard: {key} must be uint16 (N, {size}, {size}), got {arrays[key].dtype} {arrays[key].shape}"
            )
    for group in (_ABNORMAL, _NORMAL):
        if len({len(arrays[key]) for key in group}) != 1:
            raise InvalidInput(f"pseudo-pair shard: {', '.join(group)} differ in length")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: v.astype(np.int64) if "seed" in k or "index" in k else v for k, v in arrays.items()})
    return buffer.getvalue()


def write_pseudo_pair_dataset(
    store: ArtifactStore, name: str, shards: Iterable[PseudoPairShard], *, size: int, source: dict, translator: dict
) -> dict:
    """Store `shards` as dataset `name`, then its manifest; return the manifest.

    `source` names what was translated ({"dataset", "split", "manifest_sha256"}), `translator` what
    translated it ({"name", "version", "weights_sha256"}). A complete dataset of that name made
    from them is reused; one made from anything else is replaced, its old manifest removed first
    so no reader ever sees old and new shards mixed.
    """
    if store.exists(manifest_key(name)):
        existing = read_pseudo_pair_manifest(store, name)
        complete = all(store.exists(shard["key"]) for shard in existing["shards"])
        if (existing["source"], existing["translator"], existing["size"]) == (source, translator, size) and complete:
            log.info("reusing pseudo-pair dataset %r (%s)", name, store.uri(manifest_key(name)))
            return existing
        log.warning("replacing pseudo-pair dataset %r (made from %s by %s)", name, existing["source"], existing["translator"])
        store.delete(manifest_key(name))
        for shard in existing["shards"]:
            store.delete(shard["key"])
    listed, counts = [], {"abnormal": 0, "normal": 0}
    for index, shard in enumerate(shards):
        ref = store.put_bytes(pseudo_pairs_shard_key(name, index), _shard_bytes(shard, size))
        entry = {
            "key": ref.key,
            "sha256": ref.sha256,
            "bytes": ref.size,
            "abnormal": len(shard.abnormal),
            "normal": len(shard.normal),
        }
        listed.append(entry)
        counts = {kind: counts[kind] + entry[kind] for kind in counts}
    if not listed:
        raise InvalidInput(f"pseudo-pair dataset {name!r}: nothing to write")
    manifest = {
        "format": PSEUDO_PAIRS_FORMAT,
        "name": name,
        "size": size,
        "source": source,
        "translator": translator,
        "counts": counts,
        "shards": listed,
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    store.put_bytes(manifest_key(name), json.dumps(manifest, indent=2, sort_keys=True).encode(), content_type="application/json")
    log.info("wrote pseudo-pair dataset %r: %s", name, counts)
    return manifest


def read_pseudo_pairs(store: ArtifactStore, name: str) -> PseudoPairs:
    """Load pseudo-pair dataset `name`, every shard verified against its manifest sha256."""
    manifest = read_pseudo_pair_manifest(store, name)
    parts: dict[str, list[np.ndarray]] = {key: [] for key in (*_ABNORMAL, *_NORMAL)}
    for shard in manifest["shards"]:
        with np.load(io.BytesIO(store.get_bytes(shard["key"], sha256=shard["sha256"])), allow_pickle=False) as npz:
            if set(npz.files) != set(parts):
                raise IntegrityError(f"pseudo-pair dataset {name!r}: shard {shard['key']} does not match its format")
            arrays = {key: npz[key] for key in parts}  # decompressed once each
        if any(len(arrays[key]) != shard["abnormal"] for key in _ABNORMAL) or any(
            len(arrays[key]) != shard["normal"] for key in _NORMAL
        ):
            raise IntegrityError(f"pseudo-pair dataset {name!r}: shard {shard['key']} holds other counts than its manifest")
        for key, array in arrays.items():
            parts[key].append(array)
    return PseudoPairs(
        **{key: np.concatenate(arrays) for key, arrays in parts.items()},
        source=manifest["source"],
        translator=manifest["translator"],
        manifest=manifest,
    )

"""Store I/O shared by every generated dataset kind (CXR phantoms, product defects): keys, seeds,
manifest reading, reuse checks and verified shard loading.

Contract: a dataset is npz shards listed with their sha256 in `datasets/<name>/manifest.json`,
written LAST (the commit point), so a crash mid-write never leaves a dataset that looks complete; a
complete dataset with the same parameters is reused, one with other parameters is refused, never
overwritten. Each dataset module keeps its own parameters, arrays and validation.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import logging
import re
from collections.abc import Callable

import numpy as np

from twinray.shared.platform.errors import IntegrityError, InvalidInput, NotFound
from twinray.shared.platform.storage.base import ArtifactStore

log = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


def manifest_key(name: str) -> str:
    return f"datasets/{name}/manifest.json"


def shard_key(name: str, split: str, index: int) -> str:
    return f"datasets/{name}/{split}/shard-{index:05d}.npz"


def derived_seed(seed: int, split: str, kind: str, index: int) -> int:
    """A 63-bit seed for `kind` (e.g. "person", "lesion", "surface") of image `index` in `split`."""
    digest = hashlib.sha256(f"{seed}/{split}/{kind}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # 63 bits: fits the int64 seed arrays of every shard


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInput(f"invalid dataset name {name!r}: use letters, digits, '.', '_' or '-'")
    return name


def splits_well_formed(splits: object) -> bool:
    """Whether manifest `splits` maps names to {count, shards: [{key, sha256, count}, ...]}."""
    return isinstance(splits, dict) and all(
        isinstance(entry, dict)
        and isinstance(entry.get("count"), int)
        and isinstance(entry.get("shards"), list)
        and all(isinstance(s, dict) and {"key", "sha256", "count"} <= s.keys() for s in entry["shards"])
        for entry in splits.values()
    )


def read_manifest_json(store: ArtifactStore, name: str, what: str) -> object:
    """The parsed manifest of dataset `name` (`what`: e.g. "phantom dataset"): NotFound if it was
    never completed, InvalidInput if it is not JSON."""
    check_name(name)
    try:
        raw = store.get_bytes(manifest_key(name))
    except NotFound:
        raise NotFound(f"no {what} {name!r}: {store.uri(manifest_key(name))} does not exist") from None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"{what} {name!r} has an invalid manifest: not JSON ({exc})") from None


def stored_parameters(manifest: dict, keys: tuple[str, ...]) -> dict:
    """The parameters a manifest was written with (`keys`) and its image count per split: what a
    new request must equal for the stored dataset to be reused."""
    stored = {key: manifest[key] for key in keys}
    stored["splits"] = {split: entry["count"] for split, entry in sorted(manifest["splits"].items())}
    return stored


def validated_manifest(
    store: ArtifactStore,
    name: str,
    *,
    what: str,
    dataset_format: str | tuple[str, ...],
    keys: tuple[str, ...],
    check: Callable[[dict], str],
) -> dict:
    """The manifest of dataset `name` if it is complete, of (one of) `dataset_format`, and `check` (the dataset kind's
    own test, returning a problem or "") passes; NotFound if it was never completed, else InvalidInput."""
    manifest = read_manifest_json(store, name, what)
    problem = ""
    if not isinstance(manifest, dict):
        problem = "it is not a JSON object"
    elif missing := [key for key in keys if key not in manifest]:
        problem = f"it lacks {', '.join(missing)}"
    elif manifest["format"] not in (formats := (dataset_format,) if isinstance(dataset_format, str) else dataset_format):
        problem = f"its format is {manifest['format']!r}, this code reads {' or '.join(map(repr, formats))}"
    elif not (problem := check(manifest)) and not splits_well_formed(manifest["splits"]):
        problem = "its splits need a count and shards with key, sha256 and count"
    if problem:
        raise InvalidInput(f"{what} {name!r} has an invalid manifest: {problem}")
    return manifest


def reusable(store: ArtifactStore, what: str, existing: dict, stored: dict, wanted: dict) -> bool:
    """`what` names the dataset in messages. True when the existing dataset has the wanted parameters
    and all its shards; InvalidInput when its parameters differ (never overwrite another dataset);
    False when shards are missing (rewrite)."""
    if stored != wanted:
        raise InvalidInput(
            f"{what} already exists with other parameters ({stored}, asked {wanted}); choose another name or delete it"
        )
    if all(store.exists(s["key"]) for entry in existing["splits"].values() for s in entry["shards"]):
        log.info("reusing %s", what)
        return True
    log.warning("%s lacks shards; rewriting it", what)
    return False


def commit_manifest(store: ArtifactStore, name: str, manifest: dict, what: str) -> dict:
    """Stamp and write `manifest` as the LAST object of dataset `name` (the commit point); return it."""
    manifest["created_at"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    store.put_bytes(manifest_key(name), json.dumps(manifest, indent=2, sort_keys=True).encode(), content_type="application/json")
    log.info("wrote %s %r: %s", what, name, {s: e["count"] for s, e in manifest["splits"].items()})
    return manifest


def split_entry(manifest: dict, name: str, split: str, what: str) -> dict:
    """The manifest entry of `split`; NotFound naming the splits there are."""
    if split not in manifest["splits"]:
        raise NotFound(f"{what} {name!r} has no split {split!r} (it has {sorted(manifest['splits'])})")
    return manifest["splits"][split]


def load_split(
    store: ArtifactStore, what: str, split: str, entry: dict, shapes: dict[str, tuple[int, ...]], dtypes: dict
) -> dict[str, np.ndarray]:
    """Every array of one split, concatenated over its shards, each shard verified by its sha256.

    `shapes` gives each array's per-image shape and `dtypes` its dtype; a shard with other arrays,
    shapes or counts than the manifest says is an IntegrityError."""
    count = entry["count"]
    out = {key: np.empty((count, *shape), dtypes[key]) for key, shape in shapes.items()}
    start = 0
    for shard in entry["shards"]:
        data = store.get_bytes(shard["key"], sha256=shard["sha256"])
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            stop = start + shard["count"]
            if set(npz.files) != set(out) or stop > count:
                raise IntegrityError(f"{what}: shard {shard['key']} does not match its manifest")
            for key, array in out.items():
                values = npz[key]  # decompressed on each access: once
                if values.shape != array[start:stop].shape:
                    raise IntegrityError(f"{what}: {key} of {shard['key']} has shape {values.shape}")
                array[start:stop] = values
        start = stop
    if start != count:
        raise IntegrityError(f"{what}: split {split!r} holds {start} images, the manifest {count}")
    return out

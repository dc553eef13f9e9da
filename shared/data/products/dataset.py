"""Product-defect datasets in the artifact store: npz shards, then a manifest written last.

Same contract as the CXR phantom datasets (twinray.shared.data.dataset_io holds the common I/O): every shard is listed in the
manifest with its sha256 and verified on read; the manifest is the commit point, so a crash mid-write
never leaves a dataset that looks complete; a complete dataset with the same parameters is reused and
one with other parameters is refused, never overwritten.

A split whose name ends in "normal" holds defect-free surfaces; one ending in "defect" holds one
real-like defect per image, the kinds taken in turn from `defect_kinds` so that even five images
cover five kinds. Seeds per image come from (seed, split, "surface"|"defect", index) by hashing, so
splits never share a surface and any image can be re-rendered from its stored seeds.

Layout: datasets/<name>/<split>/shard-00000.npz ... and datasets/<name>/manifest.json.
Shard arrays: image uint16 (N, S, S) = round(value * 65535); mask bool (N, S, S); kind int8 (N,),
an index into the manifest's `kind_names` or -1 for normal; surface_seed and defect_seed int64 (N,),
defect_seed -1 for normal.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from tqdm import tqdm

from twinray.shared.data.dataset_io import (
    NAME,
    check_name,
    commit_manifest,
    derived_seed,
    load_split,
    manifest_key,
    reusable,
    shard_key,
    split_entry,
    stored_parameters,
    validated_manifest,
)
from twinray.shared.data.products.defects import DEFECT_KINDS, DEFECT_VERSION, MIN_CHANGE, check_kind, render_defect
from twinray.shared.data.products.surfaces import SURFACE_VERSION, check_category, check_size, render_surface
from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.imaging.unit_range import to_uint16, to_unit
from twinray.shared.platform.storage.base import ArtifactStore

DATASET_FORMAT = "twinray.product-defects/1"
GENERATOR_VERSION = f"{SURFACE_VERSION}+{DEFECT_VERSION}"
SEED_SCHEME = "int(sha256(f'{seed}/{split}/{surface|defect}/{index}')[:8], big) >> 1"
SPLIT_ROLES = ("normal", "defect")  # a split's name ends in one of these
_PARAMETERS = ("format", "generator_version", "category", "size", "seed", "defect_kinds", "shard_size")
_MANIFEST_KEYS = (*_PARAMETERS, "name", "splits", "kind_names", "min_change", "seed_scheme", "created_at")
_SHARD_ARRAYS = {"image": np.uint16, "mask": bool, "kind": np.int8, "surface_seed": np.int64, "defect_seed": np.int64}


@dataclasses.dataclass(frozen=True)
class ProductArrays:
    """One split in memory; images stay uint16 (value * 65535) to halve memory."""

    image: np.ndarray  # uint16 (N, S, S)
    mask: np.ndarray  # bool (N, S, S), empty for normal images
    kind: np.ndarray  # int8 (N,), index into kind_names, -1 = normal
    surface_seed: np.ndarray  # int64 (N,)
    defect_seed: np.ndarray  # int64 (N,), -1 = normal
    category: str
    kind_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.image)

    def float_image(self, index: int) -> np.ndarray:
        """Image `index` as float32 in [0, 1]."""
        return to_unit(self.image[index])

    def defect_rows(self, count: int = 0) -> np.ndarray:
        """Indices of the images that hold a defect, the first `count` of them (0 = all): how every
        trainer and generator picks "the k real defects"."""
        rows = np.flatnonzero(self.mask.reshape(len(self), -1).any(axis=1))
        return rows[:count] if count else rows

    def kind_of(self, index: int) -> str:
        """'normal' or the defect kind of image `index`."""
        return "normal" if self.kind[index] < 0 else self.kind_names[self.kind[index]]


def split_role(split: str) -> str:
    """'normal' or 'defect', from the end of the split's name."""
    for role in SPLIT_ROLES:
        if split.endswith(role):
            return role
    raise InvalidInput(f"split {split!r} must end in 'normal' or 'defect' (e.g. 'train_normal', 'test_defect')")


def _check_request(name: str, splits: dict[str, int], seed: int, defect_kinds: tuple[str, ...], shard_size: int) -> None:
    check_name(name)
    if not isinstance(splits, dict) or not splits or not all(isinstance(s, str) and NAME.match(s) for s in splits):
        raise InvalidInput(f"dataset {name!r}: splits must be a non-empty mapping of simple names, got {splits!r}")
    for split in splits:
        split_role(split)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in splits.values()):
        raise InvalidInput(f"dataset {name!r}: every split needs a positive image count, got {splits}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInput(f"dataset {name!r}: seed must be an integer >= 0, got {seed!r}")
    if not defect_kinds or len(set(defect_kinds)) != len(defect_kinds):
        raise InvalidInput(f"dataset {name!r}: defect_kinds must be distinct kinds, at least one, got {defect_kinds}")
    for kind in defect_kinds:
        check_kind(kind)
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise InvalidInput(f"dataset {name!r}: shard_size must be a positive integer, got {shard_size!r}")


def _check_manifest(manifest: dict) -> str:
    kinds = list(manifest["kind_names"])
    return "" if kinds == list(DEFECT_KINDS) else f"its defect kinds {kinds} differ from this code's {list(DEFECT_KINDS)}"


def read_product_manifest(store: ArtifactStore, name: str) -> dict:
    """The validated manifest of dataset `name` (NotFound if it was never completed)."""
    return validated_manifest(
        store, name, what="product dataset", dataset_format=DATASET_FORMAT, keys=_MANIFEST_KEYS, check=_check_manifest
    )


def render_sample(
    category: str, size: int, surface_seed: int, kind: str | None, defect_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(float32 image, bool mask) of one dataset entry; kind None = a normal surface, empty mask."""
    surface = render_surface(category, size, surface_seed)
    if kind is None:
        return surface, np.zeros(surface.shape, bool)
    return render_defect(surface, kind, defect_seed)


def _split_plan(seed: int, split: str, count: int, defect_kinds: tuple[str, ...]) -> list[tuple[int, str | None, int]]:
    """(surface_seed, kind or None, defect_seed or -1) per image of `split`."""
    defect = split_role(split) == "defect"
    return [
        (
            derived_seed(seed, split, "surface", i),
            defect_kinds[i % len(defect_kinds)] if defect else None,
            derived_seed(seed, split, "defect", i) if defect else -1,
        )
        for i in range(count)
    ]


def _shard_bytes(category: str, size: int, plan: list[tuple[int, str | None, int]], bar: tqdm) -> bytes:
    images, masks = [], []
    for surface_seed, kind, defect_seed in plan:
        image, mask = render_sample(category, size, surface_seed, kind, defect_seed)
        images.append(to_uint16(image))
        masks.append(mask)
        bar.update()
    arrays = {
        "image": np.stack(images),
        "mask": np.stack(masks),
        "kind": np.array([-1 if kind is None else DEFECT_KINDS.index(kind) for _, kind, _ in plan], np.int8),
        "surface_seed": np.array([s for s, _, _ in plan], np.int64),
        "defect_seed": np.array([d for _, _, d in plan], np.int64),
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _adds_splits(stored: dict, wanted: dict) -> bool:
    """True when `wanted` equals the `stored` parameters but for splits it adds (the old ones unchanged)."""
    same = all(stored[key] == wanted[key] for key in wanted if key != "splits")
    return same and stored["splits"].items() < wanted["splits"].items()


def write_product_dataset(
    store: ArtifactStore,
    name: str,
    *,
    category: str,
    size: int,
    splits: dict[str, int],
    seed: int,
    defect_kinds: tuple[str, ...] | list[str] = DEFECT_KINDS,
    shard_size: int = 256,
    progress: bool = True,
) -> dict:
    """Render and store dataset `name`, or reuse it when a complete one with these parameters exists.

    `splits` maps split name (ending in 'normal' or 'defect') -> image count. Returns the manifest.
    A dataset of that name with other parameters is an InvalidInput error, never overwritten, unless
    the request only ADDS splits: then the new ones are rendered beside the old, which stay as they are
    (a split's images depend on its name, never on the other splits), and the manifest gains them.
    """
    defect_kinds = tuple(defect_kinds) if isinstance(defect_kinds, (list, tuple)) else ()
    _check_request(name, splits, seed, defect_kinds, shard_size)
    wanted = {
        "format": DATASET_FORMAT,
        "generator_version": GENERATOR_VERSION,
        "category": check_category(category),
        "size": check_size(size),
        "seed": seed,
        "defect_kinds": list(defect_kinds),
        "shard_size": shard_size,
        "splits": dict(sorted(splits.items())),
    }
    kept: dict[str, dict] = {}  # splits of the stored dataset that stay
    if store.exists(manifest_key(name)):
        existing = read_product_manifest(store, name)
        stored = stored_parameters(existing, _PARAMETERS)
        if _adds_splits(stored, wanted):  # keep the old splits unless a shard is gone (then rewrite all)
            complete = all(store.exists(s["key"]) for entry in existing["splits"].values() for s in entry["shards"])
            kept = existing["splits"] if complete else {}
        elif reusable(store, f"product dataset {name!r}", existing, stored, wanted):
            return existing

    plans = {
        split: _split_plan(seed, split, count, defect_kinds) for split, count in wanted["splits"].items() if split not in kept
    }
    manifest = {
        **{key: wanted[key] for key in _PARAMETERS},
        "name": name,
        "kind_names": list(DEFECT_KINDS),
        "min_change": MIN_CHANGE,
        "seed_scheme": SEED_SCHEME,
        "splits": {},
    }
    total = sum(len(plan) for plan in plans.values())
    with tqdm(total=total, desc=f"products {name}", unit="img", disable=not progress) as bar:
        for split, plan in plans.items():
            shards = []
            for index, start in enumerate(range(0, len(plan), shard_size)):
                chunk = plan[start : start + shard_size]
                ref = store.put_bytes(shard_key(name, split, index), _shard_bytes(wanted["category"], size, chunk, bar))
                shards.append({"key": ref.key, "sha256": ref.sha256, "count": len(chunk), "bytes": ref.size})
            kinds = [kind for _, kind, _ in plan if kind is not None]
            manifest["splits"][split] = {
                "count": len(plan),
                "role": split_role(split),
                "kind_counts": {kind: kinds.count(kind) for kind in defect_kinds if kind in kinds},
                "shards": shards,
            }
    manifest["splits"] = dict(sorted({**kept, **manifest["splits"]}.items()))
    return commit_manifest(store, name, manifest, "product dataset")


def read_product_split(store: ArtifactStore, name: str, split: str) -> ProductArrays:
    """Load split `split` of dataset `name`, every shard verified against its manifest sha256."""
    manifest = read_product_manifest(store, name)
    entry, size = split_entry(manifest, name, split, "product dataset"), manifest["size"]
    shapes = {key: (size, size) if key in ("image", "mask") else () for key in _SHARD_ARRAYS}
    out = load_split(store, f"product dataset {name!r}", split, entry, shapes, _SHARD_ARRAYS)
    return ProductArrays(**out, category=manifest["category"], kind_names=tuple(manifest["kind_names"]))

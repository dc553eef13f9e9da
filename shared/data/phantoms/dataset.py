"""Phantom datasets in the artifact store: shards of npz arrays, then a manifest written last.

Training workers on other machines must read exactly the bytes the writer produced, so every shard
is listed in the manifest with its sha256 and verified on read. The manifest is the commit point:
a crash mid-write leaves shards but no manifest, never a dataset that looks complete.

Layout: datasets/<name>/<split>/shard-00000.npz ... and datasets/<name>/manifest.json.
Persons are derived from (seed, split, index) by hashing, so splits never share a person.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import torch
from tqdm import tqdm

from twinray.shared.data.anatomy import ANATOMY_CLASSES
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
from twinray.shared.data.phantoms.cxr import FIELD_OF_VIEW_MM, GENERATOR_VERSION, MAX_LESIONS, MAX_SIZE, MIN_SIZE, render_phantom
from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.imaging.unit_range import to_uint16, to_unit
from twinray.shared.platform.storage.base import ArtifactStore

DATASET_FORMAT = "twinray.cxr-phantoms/1"
SEED_SCHEME = "int(sha256(f'{seed}/{split}/{person|lesion|abnormal}/{index}')[:8], big) >> 1"
_PARAMETERS = ("format", "generator_version", "size", "seed", "abnormal_fraction", "shard_size")
_MANIFEST_KEYS = (*_PARAMETERS, "name", "splits", "label_set", "max_boxes", "spacing_mm", "seed_scheme", "created_at")
_SHARD_DTYPES = {
    "image": np.uint16,
    "twin": np.uint16,
    "anatomy": np.uint8,
    "lesion_mask": bool,
    "boxes": np.float32,
    "box_count": np.int32,
    "person_seed": np.int64,
    "lesion_seed": np.int64,
}


def _shard_shapes(size: int) -> dict[str, tuple[int, ...]]:
    image = (size, size)
    return {
        "image": image,
        "twin": image,
        "anatomy": image,
        "lesion_mask": image,
        "boxes": (MAX_LESIONS, 4),
        "box_count": (),
        "person_seed": (),
        "lesion_seed": (),
    }


@dataclasses.dataclass(frozen=True)
class PhantomArrays:
    """One split in memory. Images stay uint16 (intensity * 65535) to halve memory; lesion_seed is
    -1 for healthy images; boxes are padded to MAX_LESIONS rows, the first box_count[i] are real."""

    image: np.ndarray  # uint16 (N, H, W)
    twin: np.ndarray  # uint16 (N, H, W)
    anatomy: np.ndarray  # uint8 (N, H, W)
    lesion_mask: np.ndarray  # bool (N, H, W)
    boxes: np.ndarray  # float32 (N, MAX_LESIONS, 4), x_min, y_min, x_max, y_max in pixel edges
    box_count: np.ndarray  # int32 (N,)
    person_seed: np.ndarray  # int64 (N,)
    lesion_seed: np.ndarray  # int64 (N,)
    spacing_mm: float

    def __len__(self) -> int:
        return len(self.image)

    def boxes_of(self, index: int) -> np.ndarray:
        """The (count, 4) lesion boxes of image `index`."""
        return self.boxes[index, : self.box_count[index]]


class PhantomSegmentationDataset(torch.utils.data.Dataset):
    """(image 1xHxW float32 in [0, 1], anatomy HxW int64) pairs for the anatomy segmenter."""

    def __init__(self, arrays: PhantomArrays) -> None:
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(to_unit(self.arrays.image[index]))
        return image[None], torch.from_numpy(self.arrays.anatomy[index].astype(np.int64))


def _check_request(name: str, size: int, splits: dict[str, int], seed: int, abnormal_fraction: float, shard_size: int) -> None:
    check_name(name)
    if not splits or not all(isinstance(s, str) and NAME.match(s) for s in splits):
        raise InvalidInput(f"dataset {name!r}: splits must be a non-empty mapping of simple names, got {list(splits)}")
    if not all(isinstance(n, int) and n > 0 for n in splits.values()):
        raise InvalidInput(f"dataset {name!r}: every split needs a positive image count, got {splits}")
    if not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InvalidInput(f"dataset {name!r}: size must be an integer in {MIN_SIZE}..{MAX_SIZE}, got {size!r}")
    if not isinstance(seed, int) or seed < 0:
        raise InvalidInput(f"dataset {name!r}: seed must be an integer >= 0, got {seed!r}")
    if not isinstance(abnormal_fraction, (int, float)) or not 0.0 <= abnormal_fraction <= 1.0:
        raise InvalidInput(f"dataset {name!r}: abnormal_fraction must be in [0, 1], got {abnormal_fraction}")
    if not isinstance(shard_size, int) or shard_size < 1:
        raise InvalidInput(f"dataset {name!r}: shard_size must be a positive integer, got {shard_size!r}")


def _parameters(size: int, splits: dict[str, int], seed: int, abnormal_fraction: float, shard_size: int) -> dict:
    """What decides the dataset's bytes: equal parameters -> identical shards."""
    return {
        "format": DATASET_FORMAT,
        "generator_version": GENERATOR_VERSION,
        "size": size,
        "seed": seed,
        "abnormal_fraction": float(abnormal_fraction),
        "shard_size": shard_size,
        "splits": {split: count for split, count in sorted(splits.items())},
    }


def _check_manifest(manifest: dict) -> str:
    labels = list(manifest["label_set"])
    return (
        ""
        if labels == list(ANATOMY_CLASSES)
        else f"its label set {labels} differs from twinray.shared.data.anatomy's {list(ANATOMY_CLASSES)}"
    )


def read_phantom_manifest(store: ArtifactStore, name: str) -> dict:
    """The validated manifest of dataset `name` (NotFound if it was never completed)."""
    return validated_manifest(
        store, name, what="phantom dataset", dataset_format=DATASET_FORMAT, keys=_MANIFEST_KEYS, check=_check_manifest
    )


def _shard_bytes(phantoms: list) -> bytes:
    boxes = np.zeros((len(phantoms), MAX_LESIONS, 4), np.float32)
    for i, phantom in enumerate(phantoms):
        boxes[i, : len(phantom.boxes)] = phantom.boxes
    arrays = {
        "image": np.stack([to_uint16(ph.image) for ph in phantoms]),
        "twin": np.stack([to_uint16(ph.twin) for ph in phantoms]),
        "anatomy": np.stack([ph.anatomy for ph in phantoms]),
        "lesion_mask": np.stack([ph.lesion_mask for ph in phantoms]),
        "boxes": boxes,
        "box_count": np.array([len(ph.boxes) for ph in phantoms], np.int32),
        "person_seed": np.array([ph.person_seed for ph in phantoms], np.int64),
        "lesion_seed": np.array([-1 if ph.lesion_seed is None else ph.lesion_seed for ph in phantoms], np.int64),
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _split_plan(seed: int, split: str, count: int, abnormal_fraction: float) -> list[tuple[int, int | None]]:
    """(person_seed, lesion_seed or None) per image: exactly round(fraction * count) abnormal ones."""
    # Index 0: one permutation per split, not a draw per image.
    order = np.random.Generator(np.random.PCG64(derived_seed(seed, split, "abnormal", 0))).permutation(count)
    abnormal = order < round(abnormal_fraction * count)
    return [
        (derived_seed(seed, split, "person", i), derived_seed(seed, split, "lesion", i) if abnormal[i] else None)
        for i in range(count)
    ]


def write_phantom_dataset(
    store: ArtifactStore,
    name: str,
    *,
    size: int,
    splits: dict[str, int],
    seed: int,
    abnormal_fraction: float = 0.5,
    shard_size: int = 256,
    progress: bool = True,
) -> dict:
    """Render and store dataset `name`, or reuse it when a complete one with these parameters exists.

    `splits` maps split name -> image count. Returns the manifest. A dataset of that name with other
    parameters is an InvalidInput error, never overwritten.
    """
    _check_request(name, size, splits, seed, abnormal_fraction, shard_size)
    wanted = _parameters(size, splits, seed, abnormal_fraction, shard_size)
    if store.exists(manifest_key(name)):
        existing = read_phantom_manifest(store, name)
        if reusable(store, f"phantom dataset {name!r}", existing, stored_parameters(existing, _PARAMETERS), wanted):
            return existing

    plans = {split: _split_plan(seed, split, count, abnormal_fraction) for split, count in wanted["splits"].items()}
    persons = [person for plan in plans.values() for person, _ in plan]
    if len(set(persons)) != len(persons):  # 63-bit hashes: a collision would be astronomically rare
        raise InvalidInput(f"dataset {name!r}: seed {seed} gives a person twice; choose another seed")
    manifest = {
        **{key: wanted[key] for key in _PARAMETERS},
        "name": name,
        "label_set": list(ANATOMY_CLASSES),
        "max_boxes": MAX_LESIONS,
        "spacing_mm": FIELD_OF_VIEW_MM / size,
        "seed_scheme": SEED_SCHEME,
        "splits": {},
    }
    with tqdm(total=len(persons), desc=f"phantoms {name}", unit="img", disable=not progress) as bar:
        for split, plan in plans.items():
            shards = []
            for index, start in enumerate(range(0, len(plan), shard_size)):
                phantoms = []
                for person_seed, lesion_seed in plan[start : start + shard_size]:
                    phantoms.append(render_phantom(person_seed, size, lesion_seed=lesion_seed))
                    bar.update()
                ref = store.put_bytes(shard_key(name, split, index), _shard_bytes(phantoms))
                shards.append({"key": ref.key, "sha256": ref.sha256, "count": len(phantoms), "bytes": ref.size})
            abnormal = sum(lesion is not None for _, lesion in plan)
            manifest["splits"][split] = {"count": len(plan), "abnormal": abnormal, "shards": shards}
    return commit_manifest(store, name, manifest, "phantom dataset")


def read_phantom_split(store: ArtifactStore, name: str, split: str) -> PhantomArrays:
    """Load split `split` of dataset `name`, every shard verified against its manifest sha256."""
    manifest = read_phantom_manifest(store, name)
    entry, size = split_entry(manifest, name, split, "phantom dataset"), manifest["size"]
    out = load_split(store, f"phantom dataset {name!r}", split, entry, _shard_shapes(size), _SHARD_DTYPES)
    return PhantomArrays(**out, spacing_mm=float(manifest["spacing_mm"]))

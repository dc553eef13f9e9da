"""Phantom datasets in the artifact store: shards of npz arrays, then a manifest written last.

Training workers on other machines must read exactly the bytes the writer produced, so every shard
is listed in the manifest with its sha256 and verified on read. The manifest is the commit point:
a crash mid-write leaves shards but no manifest, never a dataset that looks complete.

Layout: datasets/<name>/<split>/shard-00000.npz ... and datasets/<name>/manifest.json.
Persons are derived from (seed, split, index) by hashing, so splits never share a person.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from twinray.shared.data.anatomy import ANATOMY_CLASSES, LUNGS
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
from twinray.shared.data.phantoms import cxr, cxr_v2
from twinray.shared.data.phantoms.calibration import FIT
from twinray.shared.data.phantoms.cxr import FIELD_OF_VIEW_MM, MAX_SIZE, MIN_SIZE, render_phantom
from twinray.shared.data.phantoms.cxr_v2 import VIEWS, render_phantom_v2
from twinray.shared.data.phantoms.pathologies import OPACITY, PATHOLOGIES
from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.imaging.unit_range import to_uint16, to_unit
from twinray.shared.platform.storage.base import ArtifactStore

_PARAMETERS = ("format", "generator_version", "size", "seed", "abnormal_fraction", "shard_size")
_MANIFEST_KEYS = (*_PARAMETERS, "name", "splits", "label_set", "max_boxes", "spacing_mm", "seed_scheme", "created_at")
_V1_DTYPES = {
    "image": np.uint16,
    "twin": np.uint16,
    "anatomy": np.uint8,
    "lesion_mask": bool,
    "boxes": np.float32,
    "box_count": np.int32,
    "person_seed": np.int64,
    "lesion_seed": np.int64,
}
_V2_DTYPES = {**_V1_DTYPES, "lung_field": bool, "lesion_labels": np.uint8, "lesion_classes": np.int8, "view": np.uint8}


@dataclasses.dataclass(frozen=True)
class _Version:
    """How one generator version's datasets are stored."""

    dataset_format: str
    max_boxes: int
    dtypes: dict[str, type]
    seed_scheme: str


VERSIONS = {
    cxr.GENERATOR_VERSION: _Version(
        "twinray.cxr-phantoms/1",
        cxr.MAX_LESIONS,
        _V1_DTYPES,
        "int(sha256(f'{seed}/{split}/{person|lesion|abnormal}/{index}')[:8], big) >> 1",
    ),
    cxr_v2.GENERATOR_VERSION: _Version(
        "twinray.cxr-phantoms/2",
        cxr_v2.MAX_LESIONS,
        _V2_DTYPES,
        "int(sha256(f'{seed}/{split}/{person|lesion|abnormal|view}/{index}')[:8], big) >> 1",
    ),
}
_FORMATS = {version.dataset_format: name for name, version in VERSIONS.items()}


def _shard_shapes(size: int, version: _Version) -> dict[str, tuple[int, ...]]:
    image = (size, size)
    shapes = {"boxes": (version.max_boxes, 4), "lesion_classes": (version.max_boxes,)}
    per_image = ("box_count", "person_seed", "lesion_seed", "view")
    return {key: shapes.get(key, () if key in per_image else image) for key in version.dtypes}


@dataclasses.dataclass(frozen=True)
class PhantomArrays:
    """One split in memory. Images stay uint16 (intensity * 65535) to halve memory; lesion_seed is
    -1 for healthy images; boxes are padded to the version's max rows, the first box_count[i] are real.
    A `cxr-phantom/1` split reads with the v2 fields filled in: every lesion an opacity (label 1),
    the labelled lungs as the lung fields, every film PA."""

    image: np.ndarray  # uint16 (N, H, W)
    twin: np.ndarray  # uint16 (N, H, W)
    anatomy: np.ndarray  # uint8 (N, H, W)
    lesion_mask: np.ndarray  # bool (N, H, W)
    boxes: np.ndarray  # float32 (N, max_boxes, 4), x_min, y_min, x_max, y_max in pixel edges
    box_count: np.ndarray  # int32 (N,)
    person_seed: np.ndarray  # int64 (N,)
    lesion_seed: np.ndarray  # int64 (N,)
    lung_field: np.ndarray  # bool (N, H, W)
    lesion_labels: np.ndarray  # uint8 (N, H, W): 0 = none, i + 1 = lesion i
    lesion_classes: np.ndarray  # int8 (N, max_boxes): PATHOLOGIES indices, -1 padding
    view: np.ndarray  # uint8 (N,): index into VIEWS
    spacing_mm: float

    def __len__(self) -> int:
        return len(self.image)

    def boxes_of(self, index: int) -> np.ndarray:
        """The (count, 4) lesion boxes of image `index`."""
        return self.boxes[index, : self.box_count[index]]


def _as_v2(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A v1 split's arrays with the fields v1 does not store, as v1's phantoms are."""
    padding = np.arange(arrays["boxes"].shape[1])[None, :] >= arrays["box_count"][:, None]
    return {
        **arrays,
        "lung_field": np.isin(arrays["anatomy"], LUNGS),
        "lesion_labels": arrays["lesion_mask"].astype(np.uint8),
        "lesion_classes": np.where(padding, -1, OPACITY).astype(np.int8),
        "view": np.zeros(len(arrays["image"]), np.uint8),
    }


class PhantomSegmentationDataset(torch.utils.data.Dataset):
    """(image 1xHxW float32 in [0, 1], anatomy HxW int64) pairs for the anatomy segmenter."""

    def __init__(self, arrays: PhantomArrays) -> None:
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(to_unit(self.arrays.image[index]))
        return image[None], torch.from_numpy(self.arrays.anatomy[index].astype(np.int64))


def _check_request(
    name: str, size: int, splits: dict[str, int], seed: int, abnormal_fraction: float, shard_size: int, generator: str
) -> None:
    check_name(name)
    if generator not in VERSIONS:
        raise InvalidInput(f"dataset {name!r}: unknown phantom generator {generator!r}; choose {' or '.join(VERSIONS)}")
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


def _parameters(size: int, splits: dict[str, int], seed: int, abnormal_fraction: float, shard_size: int, generator: str) -> dict:
    """What decides the dataset's bytes: equal parameters -> identical shards."""
    return {
        "format": VERSIONS[generator].dataset_format,
        "generator_version": generator,
        "size": size,
        "seed": seed,
        "abnormal_fraction": float(abnormal_fraction),
        "shard_size": shard_size,
        "splits": {split: count for split, count in sorted(splits.items())},
    }


def _check_manifest(manifest: dict) -> str:
    labels = list(manifest["label_set"])
    if labels != list(ANATOMY_CLASSES):
        return f"its label set {labels} differs from twinray.shared.data.anatomy's {list(ANATOMY_CLASSES)}"
    if _FORMATS[manifest["format"]] != manifest["generator_version"]:
        return f"its format {manifest['format']!r} is not the one of generator {manifest['generator_version']!r}"
    if manifest["format"] != VERSIONS[cxr.GENERATOR_VERSION].dataset_format and manifest.get("pathologies") != list(PATHOLOGIES):
        return f"its pathologies {manifest.get('pathologies')} differ from this code's {list(PATHOLOGIES)}"
    return ""


def read_phantom_manifest(store: ArtifactStore, name: str) -> dict:
    """The validated manifest of dataset `name` (NotFound if it was never completed)."""
    return validated_manifest(
        store, name, what="phantom dataset", dataset_format=tuple(_FORMATS), keys=_MANIFEST_KEYS, check=_check_manifest
    )


def _shard_bytes(phantoms: list, version: _Version) -> bytes:
    boxes = np.zeros((len(phantoms), version.max_boxes, 4), np.float32)
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
    if "view" in version.dtypes:
        classes = np.full((len(phantoms), version.max_boxes), -1, np.int8)
        for i, phantom in enumerate(phantoms):
            classes[i, : len(phantom.lesion_classes)] = phantom.lesion_classes
        arrays |= {
            "lung_field": np.stack([ph.lung_field for ph in phantoms]),
            "lesion_labels": np.stack([ph.lesion_labels for ph in phantoms]),
            "lesion_classes": classes,
            "view": np.array([VIEWS.index(ph.view) for ph in phantoms], np.uint8),
        }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _draw(seed: int, split: str, kind: str, index: int) -> float:
    return float(np.random.Generator(np.random.PCG64(derived_seed(seed, split, kind, index))).random())


def _split_plan(seed: int, split: str, count: int, abnormal_fraction: float, generator: str) -> list[dict]:
    """The render arguments of every image: exactly round(fraction * count) abnormal ones; a v2 film
    is AP with the real AP share among abnormal or normal films (the view is a confounder of disease)."""
    # Index 0: one permutation per split, not a draw per image.
    order = np.random.Generator(np.random.PCG64(derived_seed(seed, split, "abnormal", 0))).permutation(count)
    abnormal = order < round(abnormal_fraction * count)
    plan = []
    for i in range(count):
        item = {
            "person_seed": derived_seed(seed, split, "person", i),
            "lesion_seed": derived_seed(seed, split, "lesion", i) if abnormal[i] else None,
        }
        if generator == cxr_v2.GENERATOR_VERSION:
            ap_share = FIT.ap_share_abnormal if abnormal[i] else FIT.ap_share_normal
            item["view"] = VIEWS[int(_draw(seed, split, "view", i) < ap_share)]
        plan.append(item)
    return plan


def _render(render: Callable[..., Any], item: dict) -> Any:
    return render(**item)


def _rendered(render: Callable[..., Any], items: list[dict], pool: ProcessPoolExecutor | None) -> Iterator[Any]:
    """Each item's phantom, in order; rendered in `pool`'s worker processes when there is one."""
    work = functools.partial(_render, render)
    return pool.map(work, items, chunksize=4) if pool else map(work, items)


def write_phantom_dataset(
    store: ArtifactStore,
    name: str,
    *,
    size: int,
    splits: dict[str, int],
    seed: int,
    abnormal_fraction: float = 0.5,
    shard_size: int = 256,
    generator: str = cxr.GENERATOR_VERSION,
    progress: bool = True,
    workers: int = 1,
) -> dict:
    """Render and store dataset `name` with phantom `generator`, or reuse it when a complete one with
    these parameters exists. `workers` > 1 renders in that many processes: every image has its own
    seed, so the dataset is the same whatever the count.

    `splits` maps split name -> image count. Returns the manifest. A dataset of that name with other
    parameters is an InvalidInput error, never overwritten.
    """
    _check_request(name, size, splits, seed, abnormal_fraction, shard_size, generator)
    if not isinstance(workers, int) or workers < 1:
        raise InvalidInput(f"dataset {name!r}: workers must be a positive integer, got {workers!r}")
    wanted = _parameters(size, splits, seed, abnormal_fraction, shard_size, generator)
    if store.exists(manifest_key(name)):
        existing = read_phantom_manifest(store, name)
        if reusable(store, f"phantom dataset {name!r}", existing, stored_parameters(existing, _PARAMETERS), wanted):
            return existing

    version, render = VERSIONS[generator], render_phantom if generator == cxr.GENERATOR_VERSION else render_phantom_v2
    plans = {split: _split_plan(seed, split, count, abnormal_fraction, generator) for split, count in wanted["splits"].items()}
    persons = [item["person_seed"] for plan in plans.values() for item in plan]
    if len(set(persons)) != len(persons):  # 63-bit hashes: a collision would be astronomically rare
        raise InvalidInput(f"dataset {name!r}: seed {seed} gives a person twice; choose another seed")
    manifest = {
        **{key: wanted[key] for key in _PARAMETERS},
        "name": name,
        "label_set": list(ANATOMY_CLASSES),
        "max_boxes": version.max_boxes,
        "spacing_mm": FIELD_OF_VIEW_MM / size,
        "seed_scheme": version.seed_scheme,
        **({"pathologies": list(PATHOLOGIES), "views": list(VIEWS)} if generator != cxr.GENERATOR_VERSION else {}),
        "splits": {},
    }
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers > 1 else None
    with (
        pool or contextlib.nullcontext(),
        tqdm(total=len(persons), desc=f"phantoms {name}", unit="img", disable=not progress) as bar,
    ):
        for split, plan in plans.items():
            shards = []
            for index, start in enumerate(range(0, len(plan), shard_size)):
                phantoms = []
                for phantom in _rendered(functools.partial(render, size=size), plan[start : start + shard_size], pool):
                    phantoms.append(phantom)
                    bar.update()
                ref = store.put_bytes(shard_key(name, split, index), _shard_bytes(phantoms, version))
                shards.append({"key": ref.key, "sha256": ref.sha256, "count": len(phantoms), "bytes": ref.size})
            abnormal = sum(item["lesion_seed"] is not None for item in plan)
            manifest["splits"][split] = {"count": len(plan), "abnormal": abnormal, "shards": shards}
    return commit_manifest(store, name, manifest, "phantom dataset")


def read_phantom_split(store: ArtifactStore, name: str, split: str) -> PhantomArrays:
    """Load split `split` of dataset `name`, every shard verified against its manifest sha256."""
    manifest = read_phantom_manifest(store, name)
    version = VERSIONS[manifest["generator_version"]]
    entry, size = split_entry(manifest, name, split, "phantom dataset"), manifest["size"]
    out = load_split(store, f"phantom dataset {name!r}", split, entry, _shard_shapes(size, version), version.dtypes)
    return PhantomArrays(**(out if "view" in out else _as_v2(out)), spacing_mm=float(manifest["spacing_mm"]))

"""Synthetic abnormal training images for the detector: a real lesion's change carried into another
person's lungs by their anatomy maps, its box known by construction (the storage format is
twinray.shared.data.synthetic_abnormal).

Real data has boxes, not masks or healthy twins. So a lesion's change is what the published twin
model removes from a boxed abnormal training image A, A - twin(A), kept inside each box and where
it is not negligible (|change| >= SUPPORT_THRESHOLD). It is carried into a normal training image N
of the same split: each box goes with the lung that covers more of it (right or left, by the
segmenter's anatomy maps), and the centre of a lung's boxes keeps its position relative to that
lung's bounding box from A to N; the change keeps its pixels (translated by whole pixels, never
resampled), is clipped to N's lungs and added to N. Each new box is the bounding box of the change actually drawn, so boxes hold exactly
what was added and nothing added lies outside them. The synthetic image's residual comes from the
same twin model, so the residual-reading detectors train on it as on real images.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from tqdm import tqdm

from twinray.shared.data.anatomy import LUNGS
from twinray.shared.data.dataset_io import manifest_key as phantom_manifest_key
from twinray.shared.data.phantoms.dataset import read_phantom_manifest, read_phantom_split
from twinray.shared.data.synthetic_abnormal import SPLIT, SyntheticAbnormalShard, write_synthetic_abnormal_dataset
from twinray.shared.models.components.twin import TwinFunction, batched
from twinray.shared.models.normal_synthesis.network import resize_labels, segment_anatomy
from twinray.shared.models.segmentation.network import segmenter_from_weights
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.imaging import uint16_images, unit_images
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import ArtifactStore, open_store, sha256_bytes
from twinray.shared.synthesis.twin_residuals import GENERATOR, SEGMENTER, published_twin

# A change below 1/100 of the intensity range is not the lesion's: above the twin's mean change on
# healthy images (0.005-0.009, docs/decisions/0110) and below the faintest phantom lesions' (0.03).
SUPPORT_THRESHOLD = 0.01
PLACEMENT = (
    "each box goes with the lung covering more of it; the centre of a lung's boxes is mapped from the source's to the "
    "normal image's bounding box of that lung, the change translated by whole pixels, clipped to the normal image's lungs"
)
DRAWS_PER_IMAGE = 10  # (source, normal) draws allowed per synthetic image before giving up


def anatomy_maps(segmenter: torch.nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The segmenter's anatomy maps (N,S,S) int64 of images (N,1,S,S), at the images' size."""
    labels = batched(lambda x: segment_anatomy(segmenter, x)[:, None].float(), images, device)[:, 0]
    return resize_labels(labels.long(), images.shape[-1])


def _lung_box(anatomy: torch.Tensor, lung: int) -> tuple[int, int, int, int] | None:
    """(x_min, y_min, x_max, y_max) in pixel edges of label `lung` in `anatomy` (H,W), None if absent."""
    rows, cols = (anatomy == lung).nonzero(as_tuple=True)
    if not len(rows):
        return None
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def _shifted(change: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """`change` (H,W) moved by (dy, dx) whole pixels; what leaves the image is lost, what enters is 0."""
    h, w = change.shape
    out = torch.zeros_like(change)
    if abs(dy) < h and abs(dx) < w:
        out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = change[
            max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
        ]
    return out


def _offset(box: list[float], source: tuple[int, ...], normal: tuple[int, ...]) -> tuple[int, int]:
    """Whole-pixel (dy, dx) taking the box centre to the same relative place of the normal lung box."""
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    moved = [normal[a] + (centre[a] - source[a]) * (normal[a + 2] - normal[a]) / (source[a + 2] - source[a]) for a in (0, 1)]
    return round(moved[1] - centre[1]), round(moved[0] - centre[0])


def carry_lesions(
    change: torch.Tensor,
    boxes: torch.Tensor,
    classes: torch.Tensor,
    source_anatomy: torch.Tensor,
    normal: torch.Tensor,
    normal_anatomy: torch.Tensor,
    threshold: float = SUPPORT_THRESHOLD,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Carry the lesions of one abnormal image into one normal image (the module docstring's method).

    `change` (H,W) is the abnormal image minus its twin, `boxes` (L,4) its lesion boxes (x_min, y_min,
    x_max, y_max in pixel edges) and `classes` (L,) their classes; `source_anatomy` and
    `normal_anatomy` (H,W) are both images' anatomy maps, `normal` (H,W) the normal image in [0, 1].
    The boxes of one lung move together, by the offset of their union's centre, so overlapping boxes
    keep their overlap and each pixel of the change is added once. Returns the
    synthetic image (H,W) in [0, 1], the carried lesions' boxes (K,4) float32 (each the bounding box
    of the change drawn for it) and classes (K,) int64; a lesion with nothing left to draw is dropped.
    """
    shape = normal.shape
    if normal.ndim != 2 or change.shape != shape or source_anatomy.shape != shape or normal_anatomy.shape != shape:
        raise ValueError(
            f"change, normal and both anatomy maps must be one (H, W) shape, got {tuple(change.shape)}, {tuple(normal.shape)}, "
            f"{tuple(source_anatomy.shape)}, {tuple(normal_anatomy.shape)}"
        )
    if boxes.ndim != 2 or boxes.shape[1] != 4 or classes.shape != (len(boxes),):
        raise ValueError(f"expected boxes (L, 4) and classes (L,), got {tuple(boxes.shape)} and {tuple(classes.shape)}")
    if not threshold > 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    h, w = shape
    normal_lungs = torch.isin(normal_anatomy, torch.tensor(LUNGS))
    significant = change.float() * (change.abs() >= threshold)
    regions, lung_of = [], []
    for x0, y0, x1, y1 in boxes.tolist():
        x0, y0, x1, y1 = max(math.floor(x0), 0), max(math.floor(y0), 0), min(math.ceil(x1), w), min(math.ceil(y1), h)
        regions.append(torch.zeros(shape, dtype=torch.bool))
        regions[-1][y0:y1, x0:x1] = True
        covered = [int((source_anatomy[y0:y1, x0:x1] == lung).sum()) for lung in LUNGS]
        lung_of.append(LUNGS[covered.index(max(covered))] if max(covered) else None)
    total, carried = torch.zeros(shape), {}
    for lung in LUNGS:
        group, target = [i for i, of in enumerate(lung_of) if of == lung], _lung_box(normal_anatomy, lung)
        if not group or target is None:
            continue
        union = [min(float(boxes[i, a]) for i in group) for a in (0, 1)] + [
            max(float(boxes[i, a]) for i in group) for a in (2, 3)
        ]
        dy, dx = _offset(union, _lung_box(source_anatomy, lung), target)
        total += _shifted(significant * torch.stack([regions[i] for i in group]).any(dim=0), dy, dx) * normal_lungs
        carried |= {i: _shifted(significant * regions[i], dy, dx) * normal_lungs for i in group}
    kept_boxes, kept_classes = [], []
    for i, pathology in enumerate(classes.tolist()):
        rows, cols = carried[i].nonzero(as_tuple=True) if i in carried else ((), ())
        if len(rows):
            kept_boxes.append([int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1])
            kept_classes.append(pathology)
    image = (normal.float() + total).clamp(0.0, 1.0)
    return image, torch.tensor(kept_boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(kept_classes, dtype=torch.int64)


def write_synthetic_abnormal(
    settings_or_store: Settings | ArtifactStore,
    *,
    dataset: str = "cxr-phantoms-v2",
    count: int,
    seed: int = 0,
    model: str = GENERATOR,
    model_version: int | str = "latest",
    segmentation_version: int | str | None = None,
    name: str = "",
    shard_size: int = 256,
    progress: bool = True,
) -> dict:
    """Store `count` synthetic abnormal images made from `dataset`'s train split as dataset `name`
    (default "<dataset>-synthetic-<model>-v<version>-seed<seed>-n<count>"); return its manifest.

    Each image draws (with `seed`) a boxed training image and a box-free one and carries the first's
    lesions into the second (`carry_lesions`); a draw that carries nothing is drawn again. The twin is
    a published `model` version ("normal-synthesis" or "matching-pairs", raw, as its twin residuals
    are), the anatomy maps come from `segmentation_version` (default: the segmenter the twin was
    trained with, else the latest). The first k images do not depend on `count`. The same parameters
    reuse what is stored; a dataset of that name made otherwise is InvalidInput. Read it back with
    `twinray.shared.data.synthetic_abnormal.read_synthetic_abnormal`."""
    store = settings_or_store if isinstance(settings_or_store, ArtifactStore) else open_store(settings_or_store)
    for label, value, least in (("count", count, 1), ("seed", seed, 0), ("shard_size", shard_size, 1)):
        if not isinstance(value, int) or value < least:
            raise InvalidInput(f"{label} must be an integer >= {least}, got {value!r}")
    registry = ModelRegistry(store)
    twin, provenance = published_twin(registry, model, model_version)
    if segmentation_version is None:
        segmentation_version = provenance.get("segmenter", {}).get("version", "latest")
    seg = registry.load(SEGMENTER, segmentation_version)
    segmenter = segmenter_from_weights(seg.config, seg.weights)
    name = name or f"{dataset}-synthetic-{model}-v{provenance['version']}-seed{seed}-n{count}"
    phantoms = read_phantom_manifest(store, dataset)
    cpu = torch.device("cpu")

    def shards() -> Iterator[SyntheticAbnormalShard]:  # runs only when the stored dataset cannot be reused
        arrays = read_phantom_split(store, dataset, SPLIT)
        sources, normals = np.flatnonzero(arrays.box_count > 0), np.flatnonzero(arrays.box_count == 0)
        if not len(sources) or not len(normals):
            raise InvalidInput(
                f"{dataset!r}/{SPLIT} needs images with boxes and without: it has {len(sources)} and {len(normals)}"
            )
        image = unit_images(arrays.image)
        anatomy = anatomy_maps(segmenter, image, cpu)
        change = dict(zip(sources.tolist(), image[sources, 0] - batched(twin, image[sources], cpu)[:, 0]))
        rng, rows, made = np.random.default_rng(seed), [], 0
        with tqdm(total=count, desc=f"synthetic {name}", unit="img", disable=not progress) as bar:
            for _ in range(DRAWS_PER_IMAGE * count):
                a, n = int(rng.choice(sources)), int(rng.choice(normals))
                classes = torch.from_numpy(arrays.lesion_classes[a, : arrays.box_count[a]].astype(np.int64))
                carried = carry_lesions(
                    change[a], torch.from_numpy(arrays.boxes_of(a).copy()), classes, anatomy[a], image[n, 0], anatomy[n]
                )
                if not len(carried[1]):
                    continue
                rows.append((a, n, *carried))
                made += 1
                bar.update(1)
                if len(rows) == shard_size or made == count:
                    yield _shard(rows, twin, phantoms["max_boxes"])
                    rows = []
                if made == count:
                    return
        raise InvalidInput(
            f"only {made} of {count} images carried a lesion after {DRAWS_PER_IMAGE * count} draws: {model} v{provenance['version']} "
            f"changes almost nothing (|change| < {SUPPORT_THRESHOLD}) inside {dataset!r}'s boxes, or the segmenter finds no lungs"
        )

    return write_synthetic_abnormal_dataset(
        store,
        name,
        shards(),
        size=phantoms["size"],
        max_boxes=phantoms["max_boxes"],
        source={
            "dataset": dataset,
            "split": SPLIT,
            "manifest_sha256": sha256_bytes(store.get_bytes(phantom_manifest_key(dataset))),
        },
        model=provenance,
        segmenter={"name": SEGMENTER, "version": seg.version, "weights_sha256": seg.manifest["weights_sha256"]},
        seed=seed,
        count=count,
        method={"change": "image - twin(image) inside each box", "support_threshold": SUPPORT_THRESHOLD, "placement": PLACEMENT},
    )


def _shard(rows: list[tuple], twin: TwinFunction, max_boxes: int) -> SyntheticAbnormalShard:
    """Stored arrays of the synthetic images `rows` (source row, normal row, image, boxes, classes);
    the residual is taken of the image as stored (uint16), as twin residuals of real images are."""
    stored = uint16_images(torch.stack([row[2] for row in rows])[:, None])
    image = unit_images(stored)
    residual = (image - batched(twin, image, torch.device("cpu")))[:, 0].numpy().astype(np.float16)
    boxes, classes = np.zeros((len(rows), max_boxes, 4), np.float32), np.full((len(rows), max_boxes), -1, np.int8)
    for i, (_, _, _, kept, pathology) in enumerate(rows):
        boxes[i, : len(kept)], classes[i, : len(kept)] = kept.numpy(), pathology.numpy()
    return SyntheticAbnormalShard(
        image=stored,
        residual=residual,
        boxes=boxes,
        box_count=np.array([len(row[3]) for row in rows], np.int32),
        lesion_classes=classes,
        source_index=np.array([row[0] for row in rows], np.int64),
        normal_index=np.array([row[1] for row in rows], np.int64),
    )

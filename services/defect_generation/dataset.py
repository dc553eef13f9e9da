"""Generated defect datasets in the artifact store: a job spec first, one object per sample, the
manifest last; so a job can be resumed sample by sample and read back as training data.

Layout: datasets/<name>/job.json (the job's parameters, the first object written),
datasets/<name>/samples/000123.npz (one sample: a one-image shard of the shared dataset format:
image and normal uint16 (1,S,S) = value * 65535, mask bool (1,S,S), seed and normal_index int64
(1,), normal_index -1 for a sampled normal) and datasets/<name>/manifest.json (written LAST, the
commit point of twinray.shared.data.dataset_io: split "samples" lists each whole, verified sample with its sha256).
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile

import numpy as np

from twinray.shared.data.dataset_io import derived_seed, load_split, split_entry, validated_manifest
from twinray.shared.platform.errors import IntegrityError, InvalidInput, NotFound
from twinray.shared.platform.imaging.unit_range import to_uint16
from twinray.shared.platform.storage.base import ArtifactRef, ArtifactStore, sha256_bytes

DATASET_FORMAT = "twinray.generated-defects/2"  # /2: methods stored by name (mask_blend, conditioned_ddpm), not A / B
SPLIT = "samples"
SEED_SCHEME = "int(sha256(f'{seed}/samples/defect/{index}')[:8], big) >> 1"
JOB_KEYS = ("format", "name", "count", "method", "seed", "steps", "normal_dataset", "size", "models")
_MANIFEST_KEYS = (*JOB_KEYS, "splits", "seed_scheme", "created_at")
_ARRAYS = {"image": np.uint16, "mask": bool, "normal": np.uint16, "seed": np.int64, "normal_index": np.int64}
_UNREADABLE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


@dataclasses.dataclass(frozen=True)
class GeneratedArrays:
    """A generated dataset in memory, ready to train a defect segmenter on."""

    image: np.ndarray  # uint16 (N, S, S): the normal image with a synthetic defect
    mask: np.ndarray  # bool (N, S, S): exactly the pixels that may differ from `normal`
    normal: np.ndarray  # uint16 (N, S, S): the normal image it was drawn on
    seed: np.ndarray  # int64 (N,): the seed that reproduces each sample
    normal_index: np.ndarray  # int64 (N,): row of the normal dataset's train_normal split, -1 = sampled

    def __len__(self) -> int:
        return len(self.image)


def job_key(name: str) -> str:
    return f"datasets/{name}/job.json"


def sample_key(name: str, index: int) -> str:
    return f"datasets/{name}/samples/{index:06d}.npz"


def sample_seed(job_seed: int, index: int) -> int:
    """The 63-bit seed of sample `index`: from (job seed, index) only, so a resumed job draws what an
    uninterrupted one would."""
    return derived_seed(job_seed, SPLIT, "defect", index)


def normal_pick(seed: int, available: int) -> int:
    """Which of `available` normal images the sample with `seed` is drawn on."""
    return int(np.random.default_rng(seed).integers(available))


def sample_bytes(image: np.ndarray, mask: np.ndarray, normal: np.ndarray, seed: int, normal_index: int) -> bytes:
    """One sample (float images in [0, 1], bool mask) as a one-image npz shard; uint16 computed in
    float64, as encode_float01_png16 does, so the stored and the streamed PNG pixels agree."""
    image, normal = np.asarray(image, np.float64), np.asarray(normal, np.float64)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        image=to_uint16(image)[None],
        mask=mask.astype(bool)[None],
        normal=to_uint16(normal)[None],
        seed=np.array([seed], np.int64),
        normal_index=np.array([normal_index], np.int64),
    )
    return buffer.getvalue()


def stored_sample(store: ArtifactStore, name: str, index: int, seed: int, size: int) -> ArtifactRef | None:
    """The ref of sample `index` if it is stored whole (readable, its arrays' shapes and dtypes, the
    expected seed, a non-empty mask); None if it is missing or broken (regenerate it)."""
    key = sample_key(name, index)
    try:
        data = store.get_bytes(key)
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {field: npz[field] for field in npz.files}  # reading checks each member's CRC
    except (NotFound, *_UNREADABLE):
        return None
    shapes = {field: (1, size, size) if field in ("image", "mask", "normal") else (1,) for field in _ARRAYS}
    whole = set(arrays) == set(_ARRAYS) and all(
        arrays[field].shape == shapes[field] and arrays[field].dtype == np.dtype(dtype) for field, dtype in _ARRAYS.items()
    )
    if not whole or int(arrays["seed"][0]) != seed or not arrays["mask"].any():
        return None
    return ArtifactRef(bucket=store.bucket, key=key, sha256=sha256_bytes(data), size=len(data))


def job_bytes(spec: dict) -> bytes:
    return json.dumps(spec, indent=2, sort_keys=True).encode()


def read_job(store: ArtifactStore, name: str) -> dict | None:
    """The job spec of generated dataset `name`; None if there is none. A dataset of that name that is
    not a generated one (e.g. a product dataset) is InvalidInput: never written over."""
    try:
        raw = store.get_bytes(job_key(name))
    except NotFound:
        if store.exists(f"datasets/{name}/manifest.json"):
            raise InvalidInput(f"dataset {name!r} exists and is not a generated defect dataset; choose another name") from None
        return None
    try:
        job = json.loads(raw)
    except ValueError:
        job = None
    if not isinstance(job, dict) or job.get("format") != DATASET_FORMAT or set(job) != set(JOB_KEYS):
        raise InvalidInput(
            f"dataset {name!r} has an unreadable job spec {store.uri(job_key(name))}; delete it or choose another name"
        )
    return job


def manifest_for(job: dict, samples: list[ArtifactRef]) -> dict:
    """The manifest of a finished job: every sample in index order, as one-image shards."""
    shards = [
        {"key": ref.key, "sha256": ref.sha256, "count": 1, "bytes": ref.size, "index": i, "seed": sample_seed(job["seed"], i)}
        for i, ref in enumerate(samples)
    ]
    return {**job, "seed_scheme": SEED_SCHEME, "splits": {SPLIT: {"count": len(shards), "shards": shards}}}


def _check_manifest(manifest: dict) -> str:
    indices = [shard.get("index") for shard in manifest["splits"].get(SPLIT, {}).get("shards", [])]
    return "" if indices == list(range(manifest["count"])) else f"its samples are not 0..{manifest['count'] - 1}"


def read_generated_manifest(store: ArtifactStore, name: str) -> dict:
    """The validated manifest of a finished generated dataset (NotFound if it never finished)."""
    return validated_manifest(
        store, name, what="generated defect dataset", dataset_format=DATASET_FORMAT, keys=_MANIFEST_KEYS, check=_check_manifest
    )


def read_generated_dataset(store: ArtifactStore, name: str) -> GeneratedArrays:
    """Every sample of generated dataset `name`, each verified against its manifest sha256."""
    manifest = read_generated_manifest(store, name)
    entry, size = split_entry(manifest, name, SPLIT, "generated defect dataset"), manifest["size"]
    shapes = {field: (size, size) if field in ("image", "mask", "normal") else () for field in _ARRAYS}
    arrays = load_split(store, f"generated defect dataset {name!r}", SPLIT, entry, shapes, _ARRAYS)
    if not arrays["mask"].reshape(len(arrays["mask"]), -1).any(axis=1).all():
        raise IntegrityError(f"generated defect dataset {name!r} holds a sample with an empty mask")
    return GeneratedArrays(**arrays)

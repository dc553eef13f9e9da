"""Writing the pseudo-pair dataset: every abnormal training phantom beside its translation by a
published matching-pairs translator (the storage format is twinray.shared.data.pseudo_pairs)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from tqdm import tqdm

from twinray.shared.data.dataset_io import manifest_key as phantom_manifest_key
from twinray.shared.data.phantoms.dataset import read_phantom_manifest, read_phantom_split
from twinray.shared.data.pseudo_pairs import PseudoPairShard, write_pseudo_pair_dataset
from twinray.shared.models.components.twin import TwinFunction, batched
from twinray.shared.models.matching_pairs.network import translator_from_weights, translator_twin
from twinray.shared.platform.config import Settings
from twinray.shared.platform.imaging import uint16_images, unit_images
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import ArtifactStore, open_store, sha256_bytes

TRANSLATOR = "matching-pairs"
CALIBRATION = "soft-threshold by the mean |change| on the split's normal images"


def calibrated_change(change: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """The translator's change on abnormal images (N,1,H,W) soft-thresholded by `baseline` (1,1,H,W):
    how much it changes HEALTHY images at each pixel on average. What it also does to healthy images
    is not disease (a translator may, say, darken one lung field in every image); only the excess
    over that is kept as what removing the disease takes."""
    return change.sign() * (change.abs() - baseline).clamp_min(0.0)


def calibrated_twin(translate: TwinFunction, healthy: torch.Tensor, device: torch.device) -> TwinFunction:
    """The translator's twin with `calibrated_change`, the baseline measured on `healthy` images
    (N,1,H,W) of the size the twin will see: what the pseudo-pairs hold, as a twin function."""
    baseline = (batched(translate, healthy, device) - healthy).abs().mean(dim=0, keepdim=True)
    return lambda image: (image + calibrated_change(translate(image) - image, baseline.to(image.device))).clamp(0.0, 1.0)


def write_pseudo_pairs(
    settings_or_store: Settings | ArtifactStore,
    *,
    model_version: int | str = "latest",
    dataset: str = "cxr-phantoms-v2",
    name: str = "",
    shard_size: int = 256,
    progress: bool = True,
) -> dict:
    """Translate every abnormal image of `dataset`/train with a published matching-pairs version
    and store the pseudo-pairs (with the split's normal images) as dataset `name` (default
    "<dataset>-pseudo-pairs"); return its manifest. pseudo_normal = image + `calibrated_change`,
    the baseline being the translator's mean |change| over the split's normal images. The same
    source and translator reuse what is stored; see `twinray.shared.data.pseudo_pairs` for the format and
    `read_pseudo_pairs` for reading it back."""
    store = settings_or_store if isinstance(settings_or_store, ArtifactStore) else open_store(settings_or_store)
    name = name or f"{dataset}-pseudo-pairs"
    loaded = ModelRegistry(store).load(TRANSLATOR, model_version)
    translate = translator_twin(translator_from_weights(loaded.config, loaded.weights), loaded.config["input_size"])
    size = read_phantom_manifest(store, dataset)["size"]
    cpu = torch.device("cpu")

    def shards() -> Iterator[PseudoPairShard]:  # runs only when the stored dataset cannot be reused
        arrays = read_phantom_split(store, dataset, "train")
        twin = calibrated_twin(translate, unit_images(arrays.image[arrays.lesion_seed < 0]), cpu)
        with tqdm(total=len(arrays), desc=f"pseudo-pairs {name}", unit="img", disable=not progress) as bar:
            for start in range(0, len(arrays), shard_size):
                rows = np.arange(start, min(start + shard_size, len(arrays)))
                abnormal, normal = rows[arrays.lesion_seed[rows] >= 0], rows[arrays.lesion_seed[rows] < 0]
                image = unit_images(arrays.image[abnormal])
                pseudo_normal = batched(twin, image, cpu)
                bar.update(len(rows))
                yield PseudoPairShard(
                    abnormal=arrays.image[abnormal],
                    pseudo_normal=uint16_images(pseudo_normal),
                    abnormal_person_seed=arrays.person_seed[abnormal],
                    abnormal_index=abnormal,
                    normal=arrays.image[normal],
                    normal_person_seed=arrays.person_seed[normal],
                    normal_index=normal,
                )

    return write_pseudo_pair_dataset(
        store,
        name,
        shards(),
        size=size,
        source={
            "dataset": dataset,
            "split": "train",
            "manifest_sha256": sha256_bytes(store.get_bytes(phantom_manifest_key(dataset))),
        },
        translator={
            "name": TRANSLATOR,
            "version": loaded.version,
            "weights_sha256": loaded.manifest["weights_sha256"],
            "calibration": CALIBRATION,
        },
    )

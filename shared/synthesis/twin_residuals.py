"""Writing a twin-residual dataset: image - twin for every image of a phantom dataset, by a published
twin model, once (the storage format is twinray.shared.data.twin_residuals).

Two twin models make residuals for the detector: `normal-synthesis`, the anatomy-conditioned generator
(its input segmented by the segmenter version it was trained with, its config's
`segmentation_version`), and `matching-pairs`, the CycleGAN translator, RAW. The pseudo-pairs
calibrate the translator (`twinray.shared.synthesis.pseudo_pairs.calibrated_change`) because they are
training TARGETS: a change the translator makes to every healthy image would be taught to the
generator as disease. The detector instead learns from the residual what a lesion looks like and sees
the healthy images' residuals too, so it can learn to discount a systematic change itself; and a
calibrated residual would depend on which split's normal images set the baseline (a parameter of its
own, and a leak when it is the split being scored). Raw, each residual is a function of its image and
the published weights only, as with the generator, and the `concat_cyclegan` row is the translator
as the healthy-twin benchmark's `cyclegan` row scores it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from tqdm import tqdm

from twinray.shared.data.dataset_io import manifest_key as phantom_manifest_key
from twinray.shared.data.phantoms.dataset import read_phantom_manifest, read_phantom_split
from twinray.shared.data.twin_residuals import TwinResidualShard, write_twin_residual_dataset
from twinray.shared.models.components.twin import TwinFunction, batched
from twinray.shared.models.matching_pairs.network import translator_from_weights, translator_twin
from twinray.shared.models.normal_synthesis.network import anatomy_conditioned_twin, normal_synthesizer_from_weights
from twinray.shared.models.segmentation.network import segmenter_from_weights
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.imaging import unit_images
from twinray.shared.platform.registry import LoadedModel, ModelRegistry
from twinray.shared.platform.storage import ArtifactStore, open_store, sha256_bytes

GENERATOR = "normal-synthesis"
TRANSLATOR = "matching-pairs"
SEGMENTER = "segmentation"
MODELS = (GENERATOR, TRANSLATOR)


def _identity(loaded: LoadedModel) -> dict:
    return {"name": loaded.name, "version": loaded.version, "weights_sha256": loaded.manifest["weights_sha256"]}


def published_twin(registry: ModelRegistry, model: str, version: int | str = "latest") -> tuple[TwinFunction, dict]:
    """The twin function of a published `model` version (one of MODELS) and what made it: the
    manifest's `model` entry ({name, version, weights_sha256, twin} and, for the generator, the
    `segmenter` it was trained with)."""
    if model not in MODELS:
        raise InvalidInput(f"twin residuals come from {' or '.join(MODELS)}, not {model!r}")
    loaded = registry.load(model, version)
    if model == TRANSLATOR:
        translator = translator_from_weights(loaded.config, loaded.weights)
        return translator_twin(translator, loaded.config["input_size"]), {**_identity(loaded), "twin": "translator_twin, raw"}
    if loaded.config.get("segmentation_version") is None:
        raise InvalidInput(
            f"model '{model}' version {loaded.version} records no segmentation_version in its config: "
            f"the segmenter it was trained with is unknown"
        )
    seg = registry.load(SEGMENTER, loaded.config["segmentation_version"])
    generator, segmenter = (
        normal_synthesizer_from_weights(loaded.config, loaded.weights),
        segmenter_from_weights(seg.config, seg.weights),
    )
    provenance = {**_identity(loaded), "twin": "anatomy_conditioned_twin", "segmenter": _identity(seg)}
    return lambda image: anatomy_conditioned_twin(generator, segmenter, image), provenance


def write_twin_residuals(
    settings_or_store: Settings | ArtifactStore,
    *,
    model: str,
    model_version: int | str = "latest",
    dataset: str = "cxr-phantoms-v2",
    name: str = "",
    shard_size: int = 256,
    progress: bool = True,
) -> dict:
    """Store image - twin for every image of every split of phantom `dataset`, the twin by a published
    `model` version ("normal-synthesis" or "matching-pairs", raw), as dataset `name` (default
    "<dataset>-residuals-<model>-v<version>"); return its manifest. The same source (manifest sha256)
    and model (weights sha256) reuse what is stored; a dataset of that name made otherwise is
    InvalidInput, never overwritten. Read it back with `twinray.shared.data.twin_residuals.read_twin_residuals`."""
    store = settings_or_store if isinstance(settings_or_store, ArtifactStore) else open_store(settings_or_store)
    if not isinstance(shard_size, int) or shard_size < 1:
        raise InvalidInput(f"shard_size must be a positive integer, got {shard_size!r}")
    twin, provenance = published_twin(ModelRegistry(store), model, model_version)
    name = name or f"{dataset}-residuals-{model}-v{provenance['version']}"
    phantoms = read_phantom_manifest(store, dataset)
    cpu = torch.device("cpu")

    def shards(split: str) -> Iterator[TwinResidualShard]:  # runs only when the stored dataset cannot be reused
        arrays = read_phantom_split(store, dataset, split)
        with tqdm(total=len(arrays), desc=f"residuals {name}/{split}", unit="img", disable=not progress) as bar:
            for start in range(0, len(arrays), shard_size):
                rows = np.arange(start, min(start + shard_size, len(arrays)))
                image = unit_images(arrays.image[rows])
                residual = (image - batched(twin, image, cpu))[:, 0].numpy()
                bar.update(len(rows))
                yield TwinResidualShard(residual=residual.astype(np.float16), index=rows)

    return write_twin_residual_dataset(
        store,
        name,
        {split: shards(split) for split in phantoms["splits"]},
        size=phantoms["size"],
        source={"dataset": dataset, "manifest_sha256": sha256_bytes(store.get_bytes(phantom_manifest_key(dataset)))},
        model=provenance,
    )

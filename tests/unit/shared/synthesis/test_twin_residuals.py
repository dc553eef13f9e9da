"""Writing twin residuals with tiny untrained published models on a tiny phantom dataset: what is stored
is image - twin of the right model (and segmenter), in source order, computed once, never overwritten."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from twinray.shared.data.phantoms.dataset import read_phantom_split, write_phantom_dataset
from twinray.shared.data.twin_residuals import read_twin_residual_manifest, read_twin_residuals
from twinray.shared.models.matching_pairs.network import ResidualTranslator, TranslatorConfig, translator_twin
from twinray.shared.models.normal_synthesis.network import AnatomyConditionedGenerator, SpadeConfig, anatomy_conditioned_twin
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig
from twinray.shared.platform.errors import IntegrityError, InvalidInput, NotFound
from twinray.shared.platform.imaging import unit_images
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import LocalStore
from twinray.shared.synthesis.twin_residuals import write_twin_residuals

SPLITS = {"train": 3, "val": 2, "test": 3}
DATASET = "tiny"
SHARD = 2  # rows per shard: several shards per split


def _weights(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _publish(registry: ModelRegistry, name: str, weights: dict, config: dict) -> int:
    return registry.publish(name, weights=_weights(weights), config=config, metrics={}, training={}, card="test").version


def _changing(head: torch.nn.Module, seed: int) -> None:
    """A fresh residual head changes nothing: give it weights, so the residuals are not all zero."""
    torch.manual_seed(seed)
    torch.nn.init.normal_(head.conv.weight, std=0.02)


class Published:
    """Segmenters v1 and v2 (different weights), a generator v1 trained with segmenter v1, a translator v1."""

    def __init__(self, registry: ModelRegistry) -> None:
        seg_config = SegmenterConfig(input_size=32, channels=(4, 8))
        self.segmenters = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            self.segmenters.append(AnatomySegmenter(seg_config).eval())
            _publish(registry, "segmentation", self.segmenters[-1].state_dict(), seg_config.to_dict())
        torch.manual_seed(3)
        self.generator = AnatomyConditionedGenerator(SpadeConfig(input_size=32, channels=(4, 8), n_blocks=1, hidden=4)).eval()
        _changing(self.generator.head, 4)
        config = {**self.generator.config.to_dict(), "segmentation_version": 1}
        _publish(registry, "normal-synthesis", self.generator.state_dict(), config)
        self.translator = self.new_translator(5)
        self.publish_translator(registry, self.translator)

    @staticmethod
    def new_translator(seed: int) -> ResidualTranslator:
        torch.manual_seed(seed)
        translator = ResidualTranslator(TranslatorConfig(input_size=32, channels=4, n_res_blocks=1)).eval()
        _changing(translator.head, seed + 1)
        return translator

    @staticmethod
    def publish_translator(registry: ModelRegistry, translator: ResidualTranslator) -> int:
        state = {"abnormal_to_normal": translator.state_dict(), "normal_to_abnormal": translator.state_dict()}
        return _publish(registry, "matching-pairs", state, translator.config.to_dict())


@pytest.fixture
def local_store(tmp_path) -> LocalStore:
    store = LocalStore(tmp_path / "store", "twinray")
    write_phantom_dataset(store, DATASET, size=64, splits=SPLITS, seed=7, shard_size=2, generator="cxr-phantom/2", progress=False)
    return store


@pytest.fixture
def published(local_store: LocalStore) -> Published:
    return Published(ModelRegistry(local_store))


def _assert_stored_residuals(store: LocalStore, name: str, twin) -> float:
    """Every split's stored residual equals image - twin computed here (in the writer's batches, so
    float32 agrees to the bit), row by row, within float16 rounding: |r| * 2**-11 (2**-25 for
    subnormals). Returns the worst error."""
    worst = 0.0
    for split, count in SPLITS.items():
        image = unit_images(read_phantom_split(store, DATASET, split).image)
        with torch.no_grad():
            expected = torch.cat([image[i : i + SHARD] - twin(image[i : i + SHARD]) for i in range(0, count, SHARD)])[
                :, 0
            ].numpy()
        stored = read_twin_residuals(store, name, split)
        assert stored.shape == (count, 64, 64) and stored.dtype == np.float32
        assert np.abs(expected).max() > 1e-2, "the tiny model must change the images, or nothing is tested"
        error = np.abs(stored - expected)
        assert (error <= np.abs(expected) * 2.0**-11 + 2.0**-25).all(), f"{split}: max error {error.max()}"
        worst = max(worst, float(error.max()))
    return worst


def test_generator_residuals_use_the_segmenter_it_was_trained_with(local_store: LocalStore, published: Published) -> None:
    manifest = write_twin_residuals(local_store, model="normal-synthesis", dataset=DATASET, shard_size=SHARD, progress=False)
    name = "tiny-residuals-normal-synthesis-v1"
    assert manifest["name"] == name and read_twin_residual_manifest(local_store, name) == manifest
    assert manifest["source"]["dataset"] == DATASET and len(manifest["source"]["manifest_sha256"]) == 64
    assert manifest["model"]["name"] == "normal-synthesis" and manifest["model"]["version"] == 1
    assert manifest["model"]["segmenter"]["version"] == 1  # its config's segmentation_version, not the latest (2)
    assert {split: entry["count"] for split, entry in manifest["splits"].items()} == SPLITS
    assert [len(manifest["splits"][split]["shards"]) for split in SPLITS] == [2, 1, 2]
    worst = _assert_stored_residuals(
        local_store, name, lambda image: anatomy_conditioned_twin(published.generator, published.segmenters[0], image)
    )
    assert worst <= 2.0**-13  # measured 1.22e-4: residuals up to 0.43, in [0.25, 0.5) half a float16 step is 2**-13


def test_translator_residuals_are_the_raw_translation(local_store: LocalStore, published: Published) -> None:
    manifest = write_twin_residuals(local_store, model="matching-pairs", dataset=DATASET, shard_size=SHARD, progress=False)
    assert manifest["name"] == "tiny-residuals-matching-pairs-v1" and "segmenter" not in manifest["model"]
    assert manifest["model"]["twin"] == "translator_twin, raw"
    _assert_stored_residuals(local_store, manifest["name"], translator_twin(published.translator, 32))


def test_a_second_call_reuses_the_stored_residuals(local_store: LocalStore, published: Published, monkeypatch) -> None:
    first = write_twin_residuals(local_store, model="matching-pairs", dataset=DATASET, shard_size=SHARD, progress=False)

    def no_writes(self, key: str, data: bytes, **kwargs):
        raise AssertionError(f"reusing must write nothing, wrote {key}")

    monkeypatch.setattr(LocalStore, "put_bytes", no_writes)
    assert write_twin_residuals(local_store, model="matching-pairs", dataset=DATASET, progress=False) == first


def test_another_model_version_under_the_same_name_is_refused(local_store: LocalStore, published: Published) -> None:
    first = write_twin_residuals(local_store, model="matching-pairs", dataset=DATASET, progress=False)
    registry = ModelRegistry(local_store)
    assert Published.publish_translator(registry, Published.new_translator(9)) == 2
    with pytest.raises(InvalidInput, match="already exists with other parameters"):
        write_twin_residuals(
            local_store, model="matching-pairs", model_version=2, dataset=DATASET, name=first["name"], progress=False
        )
    assert read_twin_residual_manifest(local_store, first["name"]) == first
    second = write_twin_residuals(local_store, model="matching-pairs", dataset=DATASET, progress=False)  # latest: its own name
    assert second["name"] == "tiny-residuals-matching-pairs-v2" and second["model"]["version"] == 2


def test_bad_requests_corrupt_shards_and_missing_datasets(local_store: LocalStore, published: Published) -> None:
    with pytest.raises(InvalidInput, match="normal-synthesis or matching-pairs, not 'segmentation'"):
        write_twin_residuals(local_store, model="segmentation", dataset=DATASET, progress=False)
    with pytest.raises(InvalidInput, match="shard_size must be a positive integer, got 0"):
        write_twin_residuals(local_store, model="matching-pairs", dataset=DATASET, shard_size=0, progress=False)
    generator = published.generator
    _publish(ModelRegistry(local_store), "normal-synthesis", generator.state_dict(), generator.config.to_dict())
    with pytest.raises(InvalidInput, match="version 2 records no segmentation_version"):
        write_twin_residuals(local_store, model="normal-synthesis", dataset=DATASET, progress=False)
    with pytest.raises(NotFound, match="no phantom dataset 'absent'"):
        write_twin_residuals(local_store, model="matching-pairs", dataset="absent", progress=False)
    with pytest.raises(NotFound, match="no twin-residual dataset 'tiny-residuals-matching-pairs-v1'"):
        read_twin_residuals(local_store, "tiny-residuals-matching-pairs-v1", "train")
    manifest = write_twin_residuals(local_store, model="matching-pairs", dataset=DATASET, progress=False)
    local_store.put_bytes(manifest["splits"]["val"]["shards"][0]["key"], b"corrupt")
    with pytest.raises(IntegrityError, match="is corrupt"):
        read_twin_residuals(local_store, manifest["name"], "val")
    np.testing.assert_array_equal(read_twin_residuals(local_store, manifest["name"], "train").shape, (3, 64, 64))

"""ModelCache on a real ModelRegistry over a LocalStore, with tiny real segmenters published as the
trainer publishes them (config + torch-saved state dict)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from twinray.services.common.model_cache import ModelCache
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig, segmenter_from_weights
from twinray.shared.platform.errors import InvalidInput, NotFound
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import LocalStore

NAME = "segmentation"


class CountingBuilder:
    """The real segmenter builder, remembering which versions it built (by their input size)."""

    def __init__(self) -> None:
        self.built: list[int] = []

    def __call__(self, config: dict[str, Any], weights: bytes) -> nn.Module:
        self.built.append(config["input_size"])
        return segmenter_from_weights(config, weights)


def publish(registry: ModelRegistry, input_size: int) -> dict[str, torch.Tensor]:
    """Publish a tiny segmenter; version n is told apart by its input size and its own weights."""
    torch.manual_seed(input_size)
    model = AnatomySegmenter(SegmenterConfig(input_size=input_size, channels=(4, 8)))
    weights = io.BytesIO()
    torch.save(model.state_dict(), weights)
    registry.publish(
        NAME,
        weights=weights.getvalue(),
        config=model.config.to_dict(),
        metrics={},
        training={},
        card="test",
        source_commit="test",
    )
    return model.state_dict()


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(LocalStore(tmp_path, "test"))


@pytest.fixture
def published(registry: ModelRegistry) -> dict[int, dict[str, torch.Tensor]]:
    """Versions 1, 2, 3 with input sizes 16, 32, 48."""
    return {version: publish(registry, 16 * version) for version in (1, 2, 3)}


def test_get_loads_the_pinned_version_in_eval_mode_with_its_weights(registry, published) -> None:
    build = CountingBuilder()
    version, module, config = ModelCache(registry, NAME, build, pinned="2").get()
    assert version == 2 and config["input_size"] == 32 and config["channels"] == [4, 8]
    assert isinstance(module, AnatomySegmenter) and not module.training
    for key, tensor in published[2].items():
        assert torch.equal(module.state_dict()[key], tensor), key
    assert build.built == [32]


def test_a_loaded_version_is_served_from_the_cache(registry, published) -> None:
    build = CountingBuilder()
    cache = ModelCache(registry, NAME, build, pinned="1")
    first = cache.get()
    assert cache.get("1") == first and cache.get("", name=NAME) == first
    assert cache.get()[1] is first[1] and build.built == [16]


def test_a_request_may_name_another_version_without_moving_the_pin(registry, published) -> None:
    cache = ModelCache(registry, NAME, CountingBuilder(), pinned="1")
    assert cache.get("3")[0] == 3 and cache.get("latest")[0] == 3
    assert cache.get()[0] == 1 and cache.pinned() == 1


def test_latest_is_resolved_once_on_first_use(registry, published) -> None:
    cache = ModelCache(registry, NAME, CountingBuilder())
    assert cache.get()[0] == 3
    publish(registry, 64)  # version 4 appears: the replica keeps serving what it resolved
    assert cache.get()[0] == 3 and cache.get("latest")[0] == 4


def test_the_pin_is_resolved_lazily_so_a_replica_starts_before_any_version_exists(registry) -> None:
    cache = ModelCache(registry, NAME, CountingBuilder())  # nothing published yet: no error
    with pytest.raises(NotFound, match="no published version of model 'segmentation'"):
        cache.get()
    publish(registry, 16)
    assert cache.get()[0] == 1


def test_repin_loads_the_new_version_and_serves_it_by_default(registry, published) -> None:
    build = CountingBuilder()
    cache = ModelCache(registry, NAME, build, pinned="1")
    assert cache.get()[0] == 1
    cache.repin("3")
    assert build.built == [16, 48]  # loaded by repin itself, before requests see the new pin
    version, module, config = cache.get()
    assert (version, config["input_size"]) == (3, 48) and build.built == [16, 48]
    assert torch.equal(
        module.state_dict()["unet.model.0.conv.unit0.conv.weight"], published[3]["unet.model.0.conv.unit0.conv.weight"]
    )
    publish(registry, 64)
    cache.repin("latest")
    assert cache.get()[0] == 4 and cache.pinned() == 4


@pytest.mark.parametrize(("version", "error"), [("9", NotFound), ("0", NotFound), ("three", InvalidInput)])
def test_repin_to_an_unknown_version_fails_and_keeps_the_pin(registry, published, version: str, error: type) -> None:
    build = CountingBuilder()
    cache = ModelCache(registry, NAME, build, pinned="2")
    cache.get()
    with pytest.raises(error, match="segmentation"):
        cache.repin(version)
    assert cache.get()[0] == 2 and build.built == [32]


@pytest.mark.parametrize(("version", "error"), [("9", NotFound), ("-1", NotFound), ("v2", InvalidInput), ("1.5", InvalidInput)])
def test_a_request_for_an_unknown_version_is_not_found_or_invalid(registry, published, version: str, error: type) -> None:
    with pytest.raises(error, match="segmentation"):
        ModelCache(registry, NAME, CountingBuilder()).get(version)


def test_a_request_for_another_model_is_invalid(registry, published) -> None:
    with pytest.raises(InvalidInput, match="serves model 'segmentation', not 'normal-synthesis'"):
        ModelCache(registry, NAME, CountingBuilder()).get("1", name="normal-synthesis")


def test_the_least_recently_used_version_is_evicted(registry, published) -> None:
    build = CountingBuilder()
    cache = ModelCache(registry, NAME, build, pinned="1", capacity=2)
    cache.get("1"), cache.get("2")
    cache.get("1")  # 1 is now the most recently used
    cache.get("3")  # evicts 2
    assert build.built == [16, 32, 48]
    cache.get("1"), cache.get("3")
    assert build.built == [16, 32, 48]
    cache.get("2")  # rebuilt; evicts 1, the least recently used
    cache.get("1")
    assert build.built == [16, 32, 48, 32, 16]

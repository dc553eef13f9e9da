"""`make demo` reuses a published model only when it was trained on the demo's dataset: a store from
an earlier release keeps its models, and the demo must not serve them on new data."""

from __future__ import annotations

from twinray.services.cli.demo import _published_or_trained
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage.local import LocalStore


def _publish(registry: ModelRegistry, dataset: str) -> int:
    version = registry.publish("segmentation", weights=b"w", config={}, metrics={}, training={"dataset": dataset}, card="")
    return version.version


def test_the_latest_version_on_the_same_dataset_is_reused_and_others_are_not(tmp_path, capsys):
    registry = ModelRegistry(LocalStore(tmp_path, "test"))
    trained = []

    def train() -> int:
        trained.append(True)
        return _publish(registry, "new")

    old = _publish(registry, "old")
    first = _published_or_trained(registry, "segmentation", "new", train)
    assert first != old and trained == [True] and "published segmentation" in capsys.readouterr().out
    _publish(registry, "old")  # a later version on another dataset does not shadow it
    assert _published_or_trained(registry, "segmentation", "new", train) == first and trained == [True]
    assert f"reusing published segmentation v{first}" in capsys.readouterr().out

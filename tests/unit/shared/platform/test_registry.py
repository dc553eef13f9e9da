"""The model registry on every store backend (the `store` fixture), plus its failure modes."""

from __future__ import annotations

import datetime
import json
import subprocess

import pytest

from twinray.shared.platform.errors import IntegrityError, InvalidInput, NotFound, Unavailable
from twinray.shared.platform.registry import ModelRegistry, ModelVersion
from twinray.shared.platform.storage import LocalStore, sha256_bytes


def publish(registry: ModelRegistry, name: str = "seg", weights: bytes = b"w1", **extra) -> ModelVersion:
    return registry.publish(
        name,
        weights=weights,
        config={"channels": 1},
        metrics={"dice": 0.9},
        training={"epochs": 2},
        card="# seg\nA test model.",
        source_commit="abc123",
        **extra,
    )


def test_publish_then_load(store):
    registry = ModelRegistry(store)
    first = publish(registry, weights=b"w1", extra_files={"model.onnx": b"onnx"})
    second = publish(registry, weights=b"w2")

    assert (first.version, second.version) == (1, 2)
    assert registry.versions("seg") == [1, 2]
    assert registry.latest("seg") == 2
    loaded = registry.load("seg")
    assert (loaded.version, loaded.weights, loaded.config, loaded.metrics) == (2, b"w2", {"channels": 1}, {"dice": 0.9})
    assert registry.load("seg", 1).weights == b"w1"
    assert registry.read_file("seg", 1, "model.onnx") == b"onnx"
    assert registry.read_file("seg", "latest", "card.md").decode().startswith("# seg")


def test_manifest_lists_every_file(store):
    registry = ModelRegistry(store)
    published = publish(registry, extra_files={"model.onnx": b"onnx"})
    manifest = published.manifest

    assert published.manifest_ref.key == "models/seg/1/manifest.json"
    assert json.loads(store.get_bytes("models/seg/1/manifest.json", sha256=published.manifest_ref.sha256)) == manifest
    expected = {"weights.pt", "config.json", "metrics.json", "training.json", "card.md", "model.onnx"}
    assert set(manifest["files"]) == expected
    for filename, entry in manifest["files"].items():
        data = store.get_bytes(f"models/seg/1/{filename}")
        assert entry == {"sha256": sha256_bytes(data), "size": len(data)}
    assert (manifest["name"], manifest["version"], manifest["source_commit"]) == ("seg", 1, "abc123")
    assert manifest["weights_sha256"] == sha256_bytes(b"w1")
    assert datetime.datetime.fromisoformat(manifest["created_at"]).utcoffset() == datetime.timedelta(0)


def test_resolve(store):
    registry = ModelRegistry(store)
    publish(registry)
    publish(registry)

    assert [registry.resolve("seg", v) for v in (None, "", "latest", "1", 1, 2)] == [2, 2, 2, 1, 1, 2]
    with pytest.raises(InvalidInput, match="'seg'"):
        registry.resolve("seg", "one")
    with pytest.raises(NotFound, match=r"model 'seg' has no version 7 \(published: 1, 2\)"):
        registry.resolve("seg", 7)


def test_latest_trained_on_reads_the_dataset_of_each_version(store):
    registry = ModelRegistry(store)
    for dataset in ("a", "b", "a", "c"):
        registry.publish("seg", weights=b"w", config={}, metrics={}, training={"dataset": dataset}, card="")
    assert [registry.latest_trained_on("seg", d) for d in ("a", "b", "c", "d")] == [3, 2, 4, None]
    assert registry.latest_trained_on("nothing", "a") is None


def test_unknown_model(store):
    registry = ModelRegistry(store)
    assert registry.versions("nothing") == []
    hint = "no published version of model 'nothing'; train it with `twinray train nothing`"
    with pytest.raises(NotFound, match=hint):
        registry.load("nothing")


def test_half_written_version_is_invisible(store):
    """Files without a manifest (a crashed publish) are not a version, but keep their number taken."""
    registry = ModelRegistry(store)
    publish(registry, weights=b"w1")
    store.put_bytes("models/seg/2/weights.pt", b"half")

    assert registry.versions("seg") == [1]
    assert registry.load("seg").weights == b"w1"
    with pytest.raises(NotFound):
        registry.load("seg", 2)
    assert publish(registry, weights=b"w3").version == 3


def test_corrupted_weights_raise_integrity_error(store):
    registry = ModelRegistry(store)
    publish(registry)
    store.put_bytes("models/seg/1/weights.pt", b"bit rot")

    with pytest.raises(IntegrityError, match="weights.pt"):
        registry.load("seg")
    assert registry.read_file("seg", 1, "card.md")  # other files still verify


def test_missing_file_of_a_published_version_raises_integrity_error(store):
    registry = ModelRegistry(store)
    publish(registry)
    store.delete("models/seg/1/config.json")

    with pytest.raises(IntegrityError, match="lost its file 'config.json'"):
        registry.load("seg")


def test_corrupted_manifest_raises_integrity_error(store):
    registry = ModelRegistry(store)
    publish(registry)
    store.put_bytes("models/seg/1/manifest.json", b"{not json")

    with pytest.raises(IntegrityError, match="not a valid manifest"):
        registry.load("seg")


@pytest.mark.parametrize("name", ["", "Seg", "-seg", "seg_1", "a/b", "a" * 64])
def test_invalid_names(tmp_path, name):
    registry = ModelRegistry(LocalStore(tmp_path, "bucket"))
    with pytest.raises(InvalidInput, match="invalid model name"):
        publish(registry, name=name)
    with pytest.raises(InvalidInput):
        registry.versions(name)


@pytest.mark.parametrize("filename", ["manifest.json", "weights.pt", ".claim", "a/b", ""])
def test_reserved_or_bad_extra_file_names(tmp_path, filename):
    registry = ModelRegistry(LocalStore(tmp_path, "bucket"))
    with pytest.raises(InvalidInput, match="extra file"):
        publish(registry, extra_files={filename: b"x"})
    assert registry.store.list() == []


def test_config_must_be_json(tmp_path):
    registry = ModelRegistry(LocalStore(tmp_path, "bucket"))
    with pytest.raises(InvalidInput, match="config must be JSON-serialisable"):
        registry.publish("seg", weights=b"", config={"x": object()}, metrics={}, training={}, card="")


def test_source_commit_defaults_to_git_head(tmp_path, monkeypatch):
    registry = ModelRegistry(LocalStore(tmp_path / "store", "bucket"))
    monkeypatch.chdir(tmp_path)
    common = dict(weights=b"w", config={}, metrics={}, training={}, card="")
    assert registry.publish("seg", **common).manifest["source_commit"] == "unknown"  # not a git checkout

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert registry.publish("seg", **common).manifest["source_commit"] == head


class _RivalPublisher(LocalStore):
    """Overwrites the version claim while the weights upload, as a concurrent publisher would."""

    def put_bytes(self, key, data, **kwargs):
        ref = super().put_bytes(key, data, **kwargs)
        if key.endswith("/weights.pt"):
            super().put_bytes(key.rsplit("/", 1)[0] + "/.claim", b"rival")
        return ref


def test_losing_a_version_race_publishes_nothing(tmp_path):
    registry = ModelRegistry(_RivalPublisher(tmp_path, "bucket"))
    with pytest.raises(Unavailable, match="claimed by another publisher"):
        publish(registry)
    assert registry.versions("seg") == []
    assert not registry.store.exists("models/seg/1/manifest.json")

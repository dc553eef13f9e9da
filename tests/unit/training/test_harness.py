"""The harness pieces that need no Ray cluster: typed configs, the checkpoint location, publishing,
the checkpoint choice, the worker context, and the table of specs the CLI is generated from."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import types
from pathlib import Path

import pyarrow.fs
import pytest
import ray.train
import torch

from twinray.shared.models.components.diffusion import DiffusionConfig
from twinray.shared.platform.config import Settings
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import LocalStore
from twinray.training import harness
from twinray.training.ddpm import DdpmTrainConfig, ddpm_config
from twinray.training.normal_synthesis import NormalSynthesisTrainConfig, normal_synthesis_config
from twinray.training.specs import TRAIN_SPECS


@pytest.mark.parametrize("name", list(TRAIN_SPECS))
def test_every_default_config_survives_the_trip_to_a_worker(name):
    spec = TRAIN_SPECS[name]
    config = spec.make_config()
    travelled = json.loads(json.dumps(config.to_dict()))  # as training.json holds it: tuples become lists
    assert spec.config_class.from_dict(travelled) == config
    assert isinstance(spec.config_class.from_dict(travelled).model, type(config.model))


@pytest.mark.parametrize("name", list(TRAIN_SPECS))
def test_to_dict_is_what_training_json_recorded_before(name):
    config = TRAIN_SPECS[name].make_config()
    assert config.to_dict() == {**dataclasses.asdict(config), "model": config.model.to_dict()}


def test_a_misspelt_key_is_rejected_with_its_name():
    data = DdpmTrainConfig().to_dict()
    with pytest.raises(ValueError, match=r"DdpmTrainConfig has no field 'learnig_rate'"):
        DdpmTrainConfig.from_dict({**data, "learnig_rate": 1e-3})
    with pytest.raises(ValueError, match=r"DiffusionConfig has no field 'chanels'"):
        DdpmTrainConfig.from_dict({**data, "model": {**data["model"], "chanels": [8]}})


def test_missing_keys_keep_their_defaults_and_resolved_versions_stay_numbers():
    config = NormalSynthesisTrainConfig.from_dict({"epochs": 2, "segmentation_version": 3})
    assert (config.epochs, config.segmentation_version, config.batch_size) == (2, 3, NormalSynthesisTrainConfig.batch_size)


def test_normal_synthesis_trains_on_its_datasets_pseudo_pairs_unless_told():
    assert normal_synthesis_config(dataset="mine").pseudo_pairs == "mine-pseudo-pairs"
    assert normal_synthesis_config(dataset="mine", pseudo_pairs="other").pseudo_pairs == "other"


def test_the_registry_holds_every_model_under_its_cli_name():
    assert list(TRAIN_SPECS) == [
        "segmentation",
        "matching-pairs",
        "normal-synthesis",
        "defect-masks",
        "normal-manifold",
        "defect-encoder",
        "detection",
    ]
    assert TRAIN_SPECS["defect-masks"].make_config().target == "mask"
    assert TRAIN_SPECS["normal-manifold"].make_config().target == "image"
    assert [flag.keyword for flag in TRAIN_SPECS["defect-encoder"].flags] == ["real_count", "normal_manifold_version"]
    assert TRAIN_SPECS["detection"].make_config(variant="attention").model.variant == "attention"


def test_a_ddpm_spec_refuses_the_other_target(tmp_path):
    store = LocalStore(tmp_path, "t")
    with pytest.raises(ValueError, match="defect-masks trains target 'mask', got 'image'"):
        TRAIN_SPECS["defect-masks"].prepare(store, ddpm_config("image"))


def test_checkpoints_go_under_the_local_store(tmp_path):
    settings = Settings(home=tmp_path, store_root=tmp_path / "store", store_bucket="b")
    assert harness.checkpoint_storage(settings) == (str(tmp_path / "store" / "b" / "checkpoints"), None)


def test_checkpoints_go_to_the_s3_bucket_without_a_scheme_prefix():
    settings = Settings(store_endpoint="https://minio.example:9000", store_access_key="k", store_secret_key="s", store_bucket="b")
    path, fs = harness.checkpoint_storage(settings)
    assert path == "b/checkpoints"
    options = fs.__reduce__()[1][0]  # pyarrow exposes its S3 options only through pickling
    assert isinstance(fs, pyarrow.fs.S3FileSystem)
    assert (options["endpoint_override"], options["scheme"], options["region"]) == ("minio.example:9000", "https", "us-east-1")
    assert (options["access_key"], options["secret_key"]) == ("k", "s")


def test_publish_writes_a_verified_version(tmp_path):
    registry = ModelRegistry(LocalStore(tmp_path, "t"))
    weights = torch.nn.Linear(2, 3).state_dict()
    version = harness.publish(
        registry, "tiny", state_dict=weights, config={"a": 1}, metrics={"score": 0.5}, training={"seed": 0}, card="# tiny\n"
    )
    loaded = registry.load("tiny", version.version)
    assert (version.version, loaded.config, loaded.metrics) == (1, {"a": 1}, {"score": 0.5})
    restored = torch.load(io.BytesIO(loaded.weights), weights_only=True)
    assert all(torch.equal(restored[k], weights[k]) for k in weights)
    assert set(loaded.manifest["files"]) == {"weights.pt", "config.json", "metrics.json", "training.json", "card.md"}


def _checkpoint(directory: Path, epoch: int) -> ray.train.Checkpoint:
    directory.mkdir()
    torch.save({"model": {"w": torch.tensor([float(epoch)])}, "epoch": epoch}, directory / harness.CHECKPOINT_FILE)
    return ray.train.Checkpoint.from_directory(str(directory))


def test_best_state_is_the_checkpoint_with_the_highest_score(tmp_path):
    kept = [(_checkpoint(tmp_path / f"e{e}", e), {"epoch": e, "score": s}) for e, s in ((1, 0.2), (2, 0.7), (3, 0.5))]
    result = types.SimpleNamespace(error=None, best_checkpoints=kept, checkpoint=None, metrics={})
    state, metrics = harness.best_state(result, "score")
    assert (state["epoch"], metrics) == (2, {"epoch": 2, "score": 0.7})
    assert torch.equal(state["model"]["w"], torch.tensor([2.0]))


def test_best_state_refuses_a_failed_or_empty_run():
    with pytest.raises(RuntimeError, match="training failed: boom"):
        harness.best_state(types.SimpleNamespace(error=ValueError("boom")), "score")
    empty = types.SimpleNamespace(error=None, best_checkpoints=[], checkpoint=None, metrics={})
    with pytest.raises(RuntimeError, match="no checkpoint"):
        harness.best_state(empty, "score")


def test_worker_context_types_the_config_and_caps_threads_at_the_cores(monkeypatch, tmp_path):
    context = types.SimpleNamespace(get_world_rank=lambda: 1, get_world_size=lambda: 2)
    monkeypatch.setattr(ray.train, "get_context", lambda: context)
    monkeypatch.setattr(ray.train.torch, "get_device", lambda: torch.device("cpu"))
    settings = Settings(home=tmp_path, store_root=tmp_path / "store")
    config = DdpmTrainConfig(epochs=3, model=DiffusionConfig(image_size=16))
    loop_config = {"config": json.loads(json.dumps(config.to_dict())), "settings_env": settings.as_env(), "threads": 10_000}
    threads = torch.get_num_threads()
    try:
        worker = harness.worker_context(loop_config, DdpmTrainConfig)
        assert torch.get_num_threads() == os.cpu_count()
    finally:
        torch.set_num_threads(threads)
    assert worker.config == config and (worker.rank, worker.world_size, worker.is_rank0) == (1, 2, False)
    assert isinstance(worker.store, LocalStore) and worker.device == torch.device("cpu")


def test_worker_seeds_are_shared_or_per_rank_and_derive_from_the_config_seed(tmp_path):
    def worker(rank: int, seed: int) -> harness.WorkerContext:
        return harness.WorkerContext(DdpmTrainConfig(seed=seed), LocalStore(tmp_path, "twinray"), torch.device("cpu"), rank, 2)

    first, second, reseeded = worker(0, 0), worker(1, 0), worker(0, 1)
    assert first.shared_seed("order", 3) == second.shared_seed("order", 3) != first.shared_seed("order", 4)
    assert first.shared_seed("order", 3) != first.shared_seed("weights", 3)
    assert first.rank_seed("batches") != second.rank_seed("batches")
    assert first.rank_seed("batches") != reseeded.rank_seed("batches")
    draws = [torch.randint(1000, (8,), generator=w.rank_generator("batches")) for w in (first, worker(0, 0))]
    assert torch.equal(*draws)

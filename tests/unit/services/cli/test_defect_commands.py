"""`twinray data products` (for real, into a temporary store) and `twinray train defect-masks |
normal-manifold | defect-encoder`: what the flags become, with the training functions replaced by
recorders (no Ray)."""

from __future__ import annotations

import types

import pytest

from twinray.services.cli.defaults import PRODUCT_SPLITS
from twinray.services.cli.main import build_parser, main
from twinray.shared.data.products.dataset import read_product_manifest, read_product_split
from twinray.shared.platform.config import Settings
from twinray.shared.platform.storage import open_store
from twinray.training import ddpm, defect_encoder, harness


def test_every_defect_command_parses_with_product_defaults():
    parser = build_parser()
    data = parser.parse_args(["data", "products"])
    assert (data.name, data.category, data.size, data.seed) == ("products", "metal", 64, 0)
    assert {split: getattr(data, split) for split in PRODUCT_SPLITS} == PRODUCT_SPLITS
    for model in ("defect-masks", "normal-manifold", "defect-encoder"):
        args = parser.parse_args(["train", model])
        assert (args.dataset, args.workers, args.gpus, args.real_count, args.epochs) == ("products", 1, False, 0, None)
    assert parser.parse_args(["train", "defect-encoder"]).normal_manifold_version == "latest"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "defect-masks", "--normal-manifold-version", "2"])  # the encoder's flag only


def test_data_products_writes_the_dataset_into_the_store(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TWINRAY_HOME", str(tmp_path))
    counts = [
        "--train-normal",
        "3",
        "--train-defect",
        "2",
        "--val-normal",
        "1",
        "--val-defect",
        "1",
        "--test-normal",
        "1",
        "--test-defect",
        "2",
    ]
    assert main(["data", "products", "--name", "tiny", "--category", "fabric", "--size", "32", "--seed", "4", *counts]) == 0
    store = open_store(Settings.from_env())
    manifest = read_product_manifest(store, "tiny")
    assert (manifest["category"], manifest["size"], manifest["seed"]) == ("fabric", 32, 4)
    assert {split: entry["count"] for split, entry in manifest["splits"].items()} == {
        "train_normal": 3,
        "train_defect": 2,
        "val_normal": 1,
        "val_defect": 1,
        "test_normal": 1,
        "test_defect": 2,
    }
    assert read_product_split(store, "tiny", "train_defect").mask.any(axis=(1, 2)).all()
    assert "dataset 'tiny' (fabric, 32px; " in capsys.readouterr().out
    assert main(["data", "products", "--name", "tiny", "--category", "nope"]) == 2  # a bad category is one line, exit 2
    assert "twinray:" in capsys.readouterr().err


@pytest.fixture
def calls(monkeypatch) -> dict:
    """The configs `twinray train` hands to the harness, by the name of the spec it picked."""
    recorded: dict = {}

    def fake(spec, settings, config):
        recorded[spec.name] = config
        ref = types.SimpleNamespace(key=f"models/{spec.name}/3/manifest.json")
        return types.SimpleNamespace(name=spec.name, version=3, manifest_ref=ref)

    monkeypatch.setattr(harness, "train_and_publish", fake)
    return recorded


def test_train_defect_masks_and_normal_manifold_pick_their_target_and_splits(calls, capsys):
    assert main(["train", "defect-masks", "--real-count", "5", "--epochs", "4", "--lr", "0.002"]) == 0
    config = calls["defect-masks"]
    assert (config.target, config.train_split, config.val_split) == ("mask", "train_defect", "val_defect")
    assert (config.dataset, config.real_count, config.epochs, config.learning_rate) == ("products", 5, 4, 0.002)
    assert config.batch_size == ddpm.DdpmTrainConfig().batch_size and config.model == ddpm.TARGET_DEFAULTS["mask"]["model"]
    assert main(["train", "defect-masks", "--image-size", "32"]) == 0
    assert calls["defect-masks"].model.image_size == 32 and calls["defect-masks"].epochs == ddpm.TARGET_DEFAULTS["mask"]["epochs"]
    assert main(["train", "normal-manifold", "--dataset", "mine", "--workers", "2", "--gpus"]) == 0
    config = calls["normal-manifold"]
    assert (config.target, config.train_split, config.val_split) == ("image", "train_normal", "val_normal")
    assert (config.dataset, config.workers, config.use_gpu, config.real_count) == ("mine", 2, True, 0)
    assert config.model == ddpm.TARGET_DEFAULTS["image"]["model"]
    assert "published normal-manifold version 3" in capsys.readouterr().out


def test_train_defect_encoder_passes_the_frozen_ddpm_version_and_real_count(calls, capsys):
    argv = ["train", "defect-encoder", "--normal-manifold-version", "2", "--real-count", "5", "--batch-size", "8", "--seed", "7"]
    assert main(argv) == 0
    config = calls["defect-encoder"]
    defaults = defect_encoder.DefectEncoderTrainConfig()
    assert (config.normal_manifold_version, config.real_count, config.batch_size, config.seed) == ("2", 5, 8, 7)
    assert (config.dataset, config.workers) == ("products", 1)
    assert (config.epochs, config.learning_rate) == (defaults.epochs, defaults.learning_rate)
    assert "published defect-encoder version 3" in capsys.readouterr().out

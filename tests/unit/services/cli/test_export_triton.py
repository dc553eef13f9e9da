"""`twinray export triton`: exports into the configured store and says where; bad names exit 2 with one line."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from twinray.services.cli.main import main
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig
from twinray.shared.platform.config import Settings
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import open_store


def test_export_triton_writes_the_repository_into_the_store(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("TWINRAY_HOME", str(tmp_path))
    monkeypatch.setenv("TWINRAY_STORE_ROOT", str(tmp_path / "store"))  # the suite exports the session's
    store = open_store(Settings.from_env())
    config = SegmenterConfig(input_size=32, channels=(4, 8))
    weights = io.BytesIO()
    torch.save(AnatomySegmenter(config).state_dict(), weights)
    ModelRegistry(store).publish(
        "segmentation", weights=weights.getvalue(), config=config.to_dict(), metrics={}, training={}, card=""
    )

    assert main(["export", "triton", "--models", "segmentation", "--max-batch-size", "4"]) == 0
    assert f"Triton repository {store.uri('triton')}: segmentation v1" in capsys.readouterr().out
    assert "max_batch_size: 4" in store.get_bytes("triton/segmentation/config.pbtxt").decode()
    assert store.exists("triton/segmentation/1/model.onnx") and store.exists("triton/manifest.json")


@pytest.mark.parametrize(("models", "message"), [(["segmenter"], "no served network"), (["detection"], "no published version")])
def test_unknown_or_unpublished_models_exit_2_with_one_line(tmp_path: Path, monkeypatch, capsys, models, message):
    monkeypatch.setenv("TWINRAY_HOME", str(tmp_path))
    monkeypatch.setenv("TWINRAY_STORE_ROOT", str(tmp_path / "store"))  # the suite exports the session's
    assert main(["export", "triton", "--models", *models]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1

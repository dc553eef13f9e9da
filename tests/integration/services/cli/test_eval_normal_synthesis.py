"""`twinray train matching-pairs | normal-synthesis` and `twinray eval normal-synthesis`: what the
flags become, with the training and evaluation functions replaced by recorders (no Ray)."""

from __future__ import annotations

import json
import types

import pytest

from twinray.services.cli.main import main
from twinray.services.cli.reports import print_twin_report
from twinray.shared.evaluation.normal_synthesis import evaluate_published as evaluate_normal_synthesis
from twinray.shared.synthesis import pseudo_pairs
from twinray.training import matching_pairs, normal_synthesis


@pytest.fixture
def calls(monkeypatch) -> dict:
    recorded: dict = {}

    def record(name: str, result):
        def fake(settings, *args, **kwargs):
            recorded[name] = (args, kwargs)
            return result

        return fake

    version = types.SimpleNamespace(version=5, manifest_ref=types.SimpleNamespace(key="models/x/5/manifest.json"))
    pairs = {"name": "mine-pseudo-pairs", "counts": {"abnormal": 3, "normal": 4}}
    monkeypatch.setattr(matching_pairs, "train_matching_pairs", record("train_matching_pairs", version))
    monkeypatch.setattr(pseudo_pairs, "write_pseudo_pairs", record("write_pseudo_pairs", pairs))
    monkeypatch.setattr(normal_synthesis, "train_normal_synthesis", record("train_normal_synthesis", version))
    return recorded


def test_train_matching_pairs_trains_then_writes_the_pseudo_pairs_of_the_new_version(calls, capsys):
    assert main(["train", "matching-pairs", "--dataset", "mine", "--workers", "2", "--epochs", "3", "--lr", "0.01"]) == 0
    (config,), _ = calls["train_matching_pairs"]
    defaults = matching_pairs.MatchingPairsTrainConfig()
    assert (config.dataset, config.workers, config.epochs, config.learning_rate) == ("mine", 2, 3, 0.01)
    assert (config.batch_size, config.use_gpu, config.seed) == (defaults.batch_size, False, 0)
    assert calls["write_pseudo_pairs"] == ((), {"model_version": 5, "dataset": "mine"})
    out = capsys.readouterr().out
    assert "matching-pairs version 5" in out and "mine-pseudo-pairs" in out and "3 abnormal, 4 normal" in out


def test_train_normal_synthesis_defaults_to_the_datasets_pseudo_pairs_and_the_configs_epochs(calls):
    assert main(["train", "normal-synthesis", "--dataset", "mine", "--gpus", "--batch-size", "2"]) == 0
    (config,), _ = calls["train_normal_synthesis"]
    defaults = normal_synthesis.NormalSynthesisTrainConfig()
    assert (config.pseudo_pairs, config.dataset, config.segmentation_version) == ("mine-pseudo-pairs", "mine", "latest")
    assert (config.batch_size, config.use_gpu, config.epochs, config.learning_rate) == (
        2,
        True,
        defaults.epochs,
        defaults.learning_rate,
    )
    assert main(["train", "normal-synthesis", "--pseudo-pairs", "other", "--segmentation-version", "3"]) == 0
    (config,), _ = calls["train_normal_synthesis"]
    assert (config.pseudo_pairs, config.segmentation_version) == ("other", "3")


REPORT = {
    "model": {"name": "normal-synthesis", "version": 4},
    "segmentation": {"name": "segmentation", "version": 2},
    "dataset": "mine",
    "split": "test",
    "images": 8,
    "abnormal_images": 5,
    "cyclegan": {"model": {"name": "matching-pairs", "version": 3}, "ssim": 0.81, "psnr": 30.5, "l1_to_twin": 0.0123},
    "anatomy_prior": {
        "model": {"name": "normal-synthesis", "version": 4},
        "ssim": 0.92,
        "psnr": 33.25,
        "l1_to_twin": 0.0045,
        "new_metric": 0.5,
    },
}


@pytest.mark.integration
def test_eval_normal_synthesis_json_is_the_published_models_report(
    trained_normal_synthesizer, phantom_dataset, twinray_settings, capsys
):
    version = str(trained_normal_synthesizer.version)
    assert main(["eval", "normal-synthesis", "--json", "--version", version, "--dataset", phantom_dataset, "--split", "val"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = evaluate_normal_synthesis(twinray_settings, version=version, dataset=phantom_dataset, split="val")
    assert printed == json.loads(json.dumps(expected))
    assert set(printed) >= {"cyclegan", "anatomy_prior"}


def test_twin_report_table_has_a_row_per_metric_and_a_column_per_method(capsys):
    print_twin_report(REPORT)
    lines = capsys.readouterr().out.splitlines()
    assert "mine/test (8 images, 5 abnormal images; anatomy by segmentation v2)" in lines[0]
    assert lines[1].split() == ["cyclegan", "anatomy_prior"]
    assert lines[2].split() == ["matching-pairs", "v3", "normal-synthesis", "v4"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:]}
    assert rows == {
        "ssim": ["0.8100", "0.9200"],
        "psnr": ["30.5000", "33.2500"],
        "l1_to_twin": ["0.0123", "0.0045"],
        "new_metric": ["-", "0.5000"],
    }

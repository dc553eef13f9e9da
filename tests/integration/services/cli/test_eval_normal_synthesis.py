"""`twinray train matching-pairs | normal-synthesis` (what the flags become, with the training
functions replaced by recorders, no Ray) and `twinray eval normal-synthesis --json` on a real
published generator."""

from __future__ import annotations

import json
import types

import pytest

from twinray.services.cli.main import main
from twinray.shared.evaluation.normal_synthesis import evaluate_published as evaluate_normal_synthesis
from twinray.shared.evaluation.normal_synthesis import pathology_cases
from twinray.shared.evaluation.report import check_shape
from twinray.shared.synthesis import pseudo_pairs
from twinray.training import harness, matching_pairs, normal_synthesis


@pytest.fixture
def calls(monkeypatch) -> dict:
    """What `twinray train` hands to the harness (by spec name) and to write_pseudo_pairs."""
    recorded: dict = {}

    def train(spec, settings, config):
        recorded[spec.name] = config
        return types.SimpleNamespace(version=5, manifest_ref=types.SimpleNamespace(key="models/x/5/manifest.json"))

    def write_pseudo_pairs(settings, *args, **kwargs):
        recorded["write_pseudo_pairs"] = (args, kwargs)
        return {"name": "mine-pseudo-pairs", "counts": {"abnormal": 3, "normal": 4}}

    monkeypatch.setattr(harness, "train_and_publish", train)
    monkeypatch.setattr(pseudo_pairs, "write_pseudo_pairs", write_pseudo_pairs)
    return recorded


def test_train_matching_pairs_trains_then_writes_the_pseudo_pairs_of_the_new_version(calls, capsys):
    assert main(["train", "matching-pairs", "--dataset", "mine", "--workers", "2", "--epochs", "3", "--lr", "0.01"]) == 0
    config = calls["matching-pairs"]
    defaults = matching_pairs.MatchingPairsTrainConfig()
    assert (config.dataset, config.workers, config.epochs, config.learning_rate) == ("mine", 2, 3, 0.01)
    assert (config.batch_size, config.use_gpu, config.seed) == (defaults.batch_size, False, 0)
    assert calls["write_pseudo_pairs"] == ((), {"model_version": 5, "dataset": "mine"})
    out = capsys.readouterr().out
    assert "matching-pairs version 5" in out and "mine-pseudo-pairs" in out and "3 abnormal, 4 normal" in out


def test_train_normal_synthesis_defaults_to_the_datasets_pseudo_pairs_and_the_configs_epochs(calls):
    assert main(["train", "normal-synthesis", "--dataset", "mine", "--gpus", "--batch-size", "2"]) == 0
    config = calls["normal-synthesis"]
    defaults = normal_synthesis.NormalSynthesisTrainConfig()
    assert (config.pseudo_pairs, config.dataset, config.segmentation_version) == ("mine-pseudo-pairs", "mine", "latest")
    assert (config.batch_size, config.use_gpu, config.epochs, config.learning_rate) == (
        2,
        True,
        defaults.epochs,
        defaults.learning_rate,
    )
    assert main(["train", "normal-synthesis", "--pseudo-pairs", "other", "--segmentation-version", "3"]) == 0
    config = calls["normal-synthesis"]
    assert (config.pseudo_pairs, config.segmentation_version) == ("other", "3")


@pytest.mark.integration
def test_eval_normal_synthesis_json_is_the_published_models_report(
    trained_normal_synthesizer, phantom_dataset, twinray_settings, capsys
):
    version = str(trained_normal_synthesizer.version)
    assert main(["eval", "normal-synthesis", "--json", "--version", version, "--dataset", phantom_dataset, "--split", "val"]) == 0
    printed = json.loads(capsys.readouterr().out.splitlines()[-1])
    check_shape(printed)
    expected = evaluate_normal_synthesis(twinray_settings, version=version, dataset=phantom_dataset, split="val")
    assert printed == json.loads(json.dumps(expected))
    assert list(printed["rows"]) == [
        "do_nothing",
        "lung_intensity",
        "lung_highpass",
        "cyclegan",
        "cyclegan_calibrated",
        "anatomy_prior",
    ]


@pytest.mark.integration
def test_eval_normal_synthesis_draws_a_case_per_pathology_class(
    trained_normal_synthesizer, phantom_dataset, twinray_settings, tmp_path, capsys
):
    figure = tmp_path / "classes.png"
    version = str(trained_normal_synthesizer.version)
    args = ["eval", "normal-synthesis", "--json", "--version", version, "--dataset", phantom_dataset, "--figure", str(figure)]
    assert main(args) == 0
    out, err = capsys.readouterr()
    check_shape(json.loads(out.splitlines()[-1]))  # the figure's line goes to stderr: the report stays last
    assert figure.stat().st_size > 0 and "one row per pathology class" in err
    cases = pathology_cases(twinray_settings, version=version, dataset=phantom_dataset)
    assert [case["title"] for case in cases] == ["opacity"]  # cxr-phantom/1 has opacities only
    case = cases[0]
    assert case["image"].shape == case["twin"].shape == case["anatomy"].shape == case["lesion_mask"].shape
    assert case["lesion_mask"].any()

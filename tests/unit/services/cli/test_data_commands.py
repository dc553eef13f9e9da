"""`twinray data phantoms` (both phantom generations) and `twinray data residuals`, for real, into a temporary store."""

from __future__ import annotations

import io

import pytest
import torch

from twinray.services.cli.main import build_parser, main
from twinray.shared.data.phantoms.dataset import VERSIONS, read_phantom_manifest, read_phantom_split
from twinray.shared.data.twin_residuals import read_twin_residuals
from twinray.shared.models.matching_pairs.network import ResidualTranslator, TranslatorConfig
from twinray.shared.platform.config import Settings
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import open_store


@pytest.mark.parametrize(
    ("generator", "dataset_format"), [("cxr-phantom/1", "twinray.cxr-phantoms/1"), ("cxr-phantom/2", "twinray.cxr-phantoms/2")]
)
def test_data_phantoms_writes_the_chosen_generation(tmp_path, monkeypatch, capsys, generator, dataset_format):
    monkeypatch.setenv("TWINRAY_HOME", str(tmp_path))
    name = generator.replace("/", "-")  # the session's store may be shared: one dataset per generation
    sizes = ["--size", "64", "--train", "2", "--val", "1", "--test", "1"]
    args = ["data", "phantoms", "--name", name, "--generator", generator, *sizes]
    assert main(args) == 0
    store = open_store(Settings.from_env())
    manifest = read_phantom_manifest(store, name)
    assert (manifest["format"], manifest["generator_version"]) == (dataset_format, generator)
    assert len(read_phantom_split(store, name, "train")) == 2 and name in capsys.readouterr().out


def test_the_second_generation_is_the_default_and_unknown_ones_are_refused():
    parser = build_parser()
    defaults = parser.parse_args(["data", "phantoms"])
    assert (defaults.generator, defaults.name) == ("cxr-phantom/2", "cxr-phantoms-v2")
    for generator in VERSIONS:
        assert parser.parse_args(["data", "phantoms", "--generator", generator]).generator == generator
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "phantoms", "--generator", "cxr-phantom/3"])


def test_data_residuals_stores_the_published_translators_residuals(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TWINRAY_HOME", str(tmp_path))
    dataset = "residual-phantoms"  # the session's store may be shared: names of this test's own
    sizes = ["--size", "64", "--train", "2", "--val", "1", "--test", "1"]
    assert main(["data", "phantoms", "--name", dataset, *sizes]) == 0
    store = open_store(Settings.from_env())
    torch.manual_seed(0)
    translator = ResidualTranslator(TranslatorConfig(input_size=32, channels=4, n_res_blocks=1))
    buffer = io.BytesIO()
    torch.save({"abnormal_to_normal": translator.state_dict(), "normal_to_abnormal": translator.state_dict()}, buffer)
    config = translator.config.to_dict()
    version = (
        ModelRegistry(store)
        .publish("matching-pairs", weights=buffer.getvalue(), config=config, metrics={}, training={}, card="")
        .version
    )
    capsys.readouterr()

    assert main(["data", "residuals", "--model", "matching-pairs", "--version", str(version), "--dataset", dataset]) == 0
    name = f"{dataset}-residuals-matching-pairs-v{version}"
    assert f"--residuals {name}" in capsys.readouterr().out
    assert read_twin_residuals(store, name, "train").shape == (2, 64, 64)
    assert main(["data", "residuals", "--model", "matching-pairs", "--version", str(version + 100), "--dataset", dataset]) != 0
    assert "version" in capsys.readouterr().err

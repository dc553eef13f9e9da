"""`twinray data phantoms`: both phantom generations, for real, into a temporary store."""

from __future__ import annotations

import pytest

from twinray.services.cli.main import build_parser, main
from twinray.shared.data.phantoms.dataset import VERSIONS, read_phantom_manifest, read_phantom_split
from twinray.shared.platform.config import Settings
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

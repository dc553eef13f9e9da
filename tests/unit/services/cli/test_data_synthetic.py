"""`twinray data synthetic`: its options, and a missing twin model reported in one line (the writing
itself is tested in tests/unit/shared/synthesis/test_synthetic_abnormal.py)."""

from __future__ import annotations

import pytest

from twinray.services.cli.main import build_parser, main


def test_the_count_is_required_and_the_twin_defaults_to_the_generator():
    parser = build_parser(train_models=False)
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "synthetic"])
    args = parser.parse_args(["data", "synthetic", "--count", "5", "--seed", "2"])
    assert (args.dataset, args.count, args.seed, args.model, args.version, args.name) == (
        "cxr-phantoms-v2",
        5,
        2,
        "normal-synthesis",
        "latest",
        "",
    )


def test_a_missing_twin_model_is_one_line_on_stderr(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TWINRAY_HOME", str(tmp_path))
    monkeypatch.setenv("TWINRAY_STORE_ROOT", str(tmp_path / "store"))  # the session's store may be exported
    assert main(["data", "synthetic", "--count", "3", "--model", "matching-pairs"]) != 0
    err = capsys.readouterr().err.strip()
    assert "matching-pairs" in err and "\n" not in err

"""The shared report shape: statistics by one convention, strict JSON, and a refusal of anything else."""

from __future__ import annotations

import json

import numpy as np
import pytest

from twinray.shared.evaluation.report import check_shape, evaluation_report, over_runs, published_protocol, single

PROTOCOL = {"splits": {"scored": {"split": "test", "images": 8}}, "seeds": [0, 1], "budget": {"steps": 10}, "selection": "val"}


def test_a_single_run_has_no_spread_and_runs_have_the_population_sd():
    assert single(0.5) == {"mean": 0.5, "sd": 0.0, "n": 1}
    assert over_runs([0.2, 0.4]) == {"mean": pytest.approx(0.3), "sd": pytest.approx(0.1), "n": 2}
    assert over_runs([0.7]) == {"mean": 0.7, "sd": 0.0, "n": 1}  # one run is a single value
    with pytest.raises(ValueError, match="at least one run"):
        over_runs([])


def test_the_report_is_strict_json_with_plain_types():
    rows = {"model@k=5": {"iou": over_runs([np.float32(0.25), np.float64(0.75)]), "auroc": single(float("nan"))}}
    report = evaluation_report({**PROTOCOL, "size": np.int64(64), "shares": (0.5, 0.9)}, rows)
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert report["rows"]["model@k=5"]["auroc"] == {"mean": None, "sd": 0.0, "n": 1}  # NaN: nothing to measure
    assert report["protocol"]["size"] == 64 and type(report["protocol"]["size"]) is int
    assert report["protocol"]["shares"] == [0.5, 0.9]
    assert report["rows"]["model@k=5"]["iou"]["mean"] == 0.5


def test_values_are_not_rounded():
    assert evaluation_report(PROTOCOL, {"m": {"x": single(1 / 3)}})["rows"]["m"]["x"]["mean"] == 1 / 3


@pytest.mark.parametrize(
    "protocol, rows, message",
    [
        ({"splits": {}, "seeds": None, "budget": None}, {}, "lacks \\['selection'\\]"),
        (PROTOCOL, {"m": {"iou": 0.5}}, "m/iou must be"),
        (PROTOCOL, {"m": {"iou": {"mean": 0.5, "n": 1}}}, "m/iou must be"),
    ],
)
def test_anything_but_the_shape_is_refused(protocol, rows, message):
    with pytest.raises(ValueError, match=message):
        evaluation_report(protocol, rows)


def test_check_shape_wants_exactly_protocol_and_rows():
    report = evaluation_report(PROTOCOL, {"m": {"x": single(1.0)}})
    check_shape(report)
    with pytest.raises(ValueError, match="exactly 'protocol' and 'rows'"):
        check_shape({**report, "extra": 1})


def test_published_models_are_one_run_each_with_no_shared_budget():
    protocol = published_protocol({"dataset": "d", "split": "test"}, {"segmentation": 3}, anatomy_by="segmentation")
    assert protocol["seeds"] is None and protocol["budget"] is None and "val" in protocol["selection"]
    assert protocol["splits"] == {"scored": {"dataset": "d", "split": "test"}}
    assert protocol["models"] == {"segmentation": 3} and protocol["anatomy_by"] == "segmentation"
    check_shape(evaluation_report(protocol, {}))

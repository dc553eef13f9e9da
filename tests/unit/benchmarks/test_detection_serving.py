"""benchmarks/detection_serving.py without Ray: its arguments, its ratios and notes from made-up
timings, and a --quick --no-service run of the real in-process pipeline (256 px, untrained models),
which writes a report of the documented shape (never its timings). The gRPC part starts its own Ray,
so it is left to `make benchmark`."""

from __future__ import annotations

import json

import pytest

from benchmarks import detection_serving
from twinray.shared.platform.config import Settings


def _stats(p50_ms: float, throughput_rps: float) -> dict[str, float]:
    return {"requests": 8, "p50_ms": p50_ms, "p95_ms": 2 * p50_ms, "p99_ms": 3 * p50_ms, "throughput_rps": throughput_rps}


RESULTS = {
    "in-process@1": _stats(400, 2.5),
    "in-process@8": _stats(2400, 3.2),
    "grpc+serve/batch8@1": _stats(500, 2.0),
    "grpc+serve/batch8@8": _stats(2000, 4.0),
    "grpc+serve/batch1@1": _stats(480, 2.1),
    "grpc+serve/batch1@8": _stats(3200, 2.4),
}
SETTINGS = {"in_process_torch_threads": 2, "cpu_cores": 2, "load_average_1m": [1.5, 2.0]}


def test_arguments_default_quick_and_too_few_requests(capsys):
    assert detection_serving.parse_args([]).requests == 96
    assert detection_serving.parse_args(["--requests", "40"]).service is True
    quick = detection_serving.parse_args(["--quick", "--no-service"])
    assert (quick.requests, quick.service, quick.quick) == (8, False, True)
    with pytest.raises(SystemExit):
        detection_serving.parse_args(["--requests", "4"])
    assert "--requests must be at least 8" in capsys.readouterr().err


def test_ratios_are_grpc_over_in_process_and_batched_over_unbatched():
    ratios = detection_serving.serving_ratios(RESULTS)

    assert ratios["grpc_over_inprocess"]["batch_8"]["concurrency_8"] == {"p50": 0.833, "p95": 0.833, "throughput": 1.25}
    assert ratios["grpc_over_inprocess"]["batch_1"]["concurrency_1"] == {"p50": 1.2, "p95": 1.2, "throughput": 0.84}
    assert ratios["batched_over_unbatched"]["concurrency_8"] == {"p50": 0.625, "p95": 0.625, "throughput": 1.67}
    assert set(ratios["batched_over_unbatched"]) == {"concurrency_1", "concurrency_8"}
    in_process_only = {key: stats for key, stats in RESULTS.items() if key.startswith("in-process")}
    assert detection_serving.serving_ratios(in_process_only) == {}


def test_notes_say_what_is_measured_and_tabulate_every_ratio():
    notes = detection_serving.ratio_notes(detection_serving.serving_ratios(RESULTS), SETTINGS)

    assert notes.startswith("Serving cost only: every network is untrained")
    assert "2 CPU cores, which other jobs may share (1-minute load average 1.5 before, 2.0 after)" in notes
    assert "| gRPC+Serve (max_batch_size 8) / in-process | 8 | x0.833 | x0.833 | x1.25 |" in notes
    assert "| batched / unbatched (max_batch_size 8 / 1, gRPC) | 8 | x0.625 | x0.625 | x1.67 |" in notes
    assert (
        notes.count("\n| ") == 1 + 4 + 2
    )  # the header, gRPC/in-process for 2 batch sizes x 2 concurrencies, batched/unbatched x 2
    assert detection_serving.ratio_notes({}, SETTINGS).endswith("In-process only (--no-service): no ratios.")


def test_quick_in_process_run_writes_a_report_of_the_documented_shape(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("benchmarks.report.REPORTS", tmp_path / "reports")  # never overwrite the committed report
    # a scratch home of the test's own, so the real one's environment variables are left alone
    monkeypatch.setattr(detection_serving, "scratch_settings", lambda: Settings.from_env({"TWINRAY_HOME": str(tmp_path)}))
    report = detection_serving.main(["--quick", "--no-service"])

    assert json.loads((tmp_path / "reports" / "detection_serving.json").read_text()) == json.loads(json.dumps(report))
    assert set(report["results"]) == {"in-process@1", "in-process@8"} and report["ratios"] == {}
    for stats in report["results"].values():
        assert stats["requests"] == 8 and stats["throughput_rps"] > 0
    assert {name: model["version"] for name, model in report["model"].items()} == {
        "detection": 1,
        "normal-synthesis": 1,
        "segmentation": 1,
    }
    assert report["model"]["detection"]["config"]["variant"] == "attention"
    assert report["model"]["detection"]["config"]["input_size"] == 256
    markdown = (tmp_path / "reports" / "detection_serving.md").read_text()
    assert "| in-process | - (one image a forward) | 8 | 8 |" in markdown and "no ratios" in markdown

"""Smoke test of benchmarks/defect_generation.py: --quick runs every sampling cell at 32 px (the
smallest product image) and writes a report of the documented shape (never its timings). The service
part starts its own Ray with a scratch home, so it is left to `make benchmark`."""

from __future__ import annotations

import json

import pytest

from benchmarks import defect_generation


def test_quick_run_writes_a_report_with_every_cell_and_ratio(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("benchmarks.report.REPORTS", tmp_path)  # never overwrite the committed report
    report = defect_generation.main(["--quick", "--no-service", "--device", "cpu", "--threads", "1"])

    assert json.loads((tmp_path / "defect_generation.json").read_text()) == json.loads(json.dumps(report))
    cells = {f"{model}/{sampler}@32" for model in ("mask", "conditioned") for sampler in ("ddpm", "ddim")} | {"blend/-@32"}
    assert set(report["results"]) == cells
    for stats in report["results"].values():
        assert set(stats) == {
            "samples",
            "s_per_sample",
            "samples_per_s",
            "cpu_s_per_sample",
            "peak_memory_mb",
            "steps_timed",
        }
        assert stats["samples_per_s"] > 0
    assert set(report["ratios"]) == {"sampling", "sampling_cpu_time"}
    for ratios in report["ratios"].values():
        assert set(ratios["size_32"]) == {
            "ddim_speedup_mask",
            "ddim_speedup_conditioned",
            "conditioned_over_mask_ddim",
            "mask_ddim_over_blend",
        }
    assert report["settings"]["ddpm_steps_timed"] == 2 and report["settings"]["ddpm_scaled_to"] == 1000
    markdown = (tmp_path / "defect_generation.md").read_text()
    assert "| mask DDPM (mask_blend) | 32 | DDPM-1000 |" in markdown and "DDIM speed-up" in markdown

"""Writing benchmark reports: one JSON file and a short markdown table, side by side."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

REPORTS = Path(__file__).parent / "reports"


def latency_summary(seconds: list[float], wall_s: float) -> dict[str, float]:
    """p50/p95/p99 latency in ms and throughput in requests per second."""
    ms = np.asarray(seconds) * 1000.0
    return {
        "requests": len(seconds),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "throughput_rps": round(len(seconds) / wall_s, 2),
    }


def machine() -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu_cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(), "torch": torch.__version__}


def write_report(name: str, report: dict[str, Any], table_rows: list[dict[str, Any]], notes: str = "") -> Path:
    """Write reports/<name>.json and reports/<name>.md; returns the markdown path."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    json_path, md_path = REPORTS / f"{name}.json", REPORTS / f"{name}.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    headers = list(table_rows[0])
    lines = [f"# {name}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(row[h]) for h in headers) + " |" for row in table_rows]
    md_path.write_text("\n".join(lines) + ("\n\n" + notes if notes else "") + "\n")
    return md_path

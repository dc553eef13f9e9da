"""The one report shape every evaluation returns and every `twinray eval ... --json` prints, so a table,
a README figure and a comparison across runs read any evaluation the same way:

    {"protocol": {"splits": ..., "seeds": ..., "budget": ..., "selection": ..., <more>},
     "rows": {row: {metric: {"mean": m, "sd": s, "n": n}}}}

- `protocol` says how the numbers were made: `splits` (what was trained on, selected on and scored,
  with image counts), `seeds` (the seeds each mean runs over, or None where each row is one
  published model version), `budget` (the training budget every row shares, or None where each row
  is a published version trained by its own recorded config) and `selection` (how each row's model
  or setting was chosen, never on the scored split). It may say more: dataset, `models` (registry
  name -> version; per k in defect-augmentation, whose generators may differ per k), the feature
  extractor of a realism metric.
- `rows` are what the evaluation compares (models, or a method at a number of real examples, such as
  "real_only@k=5"); each metric is a mean with its spread.
- Convention: `n` counts independent runs (seeds, or draws of the few real examples), never images.
  `sd` is the population standard deviation (numpy's default) over those runs. A value computed once
  (one run, however many images it averages over, or a figure derived from other rows' means such as
  a relative gain) has sd 0.0 and n 1.
- The report is strict JSON: a value that is not finite (e.g. an IoU with nothing to measure) is null,
  so a mean or an sd may be null.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

PROTOCOL_KEYS = ("splits", "seeds", "budget", "selection")
STAT_KEYS = ("mean", "sd", "n")
Stat = dict[str, Any]


def single(value: float | None) -> Stat:
    """A value computed once (see the convention above)."""
    return {"mean": value, "sd": 0.0, "n": 1}


def over_runs(values: Sequence[float]) -> Stat:
    """Mean and spread of one metric over independent runs."""
    if not values:
        raise ValueError("a metric needs at least one run")
    return {"mean": float(np.mean(values)), "sd": float(np.std(values)), "n": len(values)}


def json_safe(value: Any) -> Any:
    """Plain JSON types, with non-finite floats as None, so `json.dumps(..., allow_nan=False)` works."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def check_shape(report: Mapping[str, Any]) -> None:
    """ValueError unless `report` has the shared shape."""
    if set(report) != {"protocol", "rows"}:
        raise ValueError(f"a report holds exactly 'protocol' and 'rows', got {sorted(report)}")
    missing = [key for key in PROTOCOL_KEYS if key not in report["protocol"]]
    if missing:
        raise ValueError(f"the protocol lacks {missing}")
    for row, metrics in report["rows"].items():
        for metric, stat in metrics.items():
            if not isinstance(stat, Mapping) or tuple(stat) != STAT_KEYS:
                raise ValueError(f"{row}/{metric} must be {{'mean', 'sd', 'n'}}, got {stat!r}")


def evaluation_report(protocol: Mapping[str, Any], rows: Mapping[str, Mapping[str, Stat]]) -> dict[str, Any]:
    """The shared shape from a protocol and rows of metric statistics, as strict JSON types."""
    report = json_safe({"protocol": protocol, "rows": rows})
    check_shape(report)
    return report


PUBLISHED = "each model as given (a published version: its checkpoint chosen on val by its trainer), scored once here"


def published_protocol(scored: Mapping[str, Any], models: Mapping[str, Any], **more: Any) -> dict[str, Any]:
    """The protocol of scoring published versions as they are: one run each, trained by their own configs."""
    return {
        "splits": {"scored": dict(scored)},
        "seeds": None,
        "budget": None,
        "selection": PUBLISHED,
        "models": dict(models),
        **more,
    }

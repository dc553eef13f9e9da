"""Evaluation reports (twinray.shared.evaluation.report's shape) as tables a person reads in a terminal,
or as the one JSON line `--json` promises."""

from __future__ import annotations

import json
from collections.abc import Sequence

DEFECT_METRICS = ("iou", "pixel_auroc", "iou_gain", "kid", "feature_distance")  # the defect table's columns
DETECTION_METRICS = ("rsna_score", "map", "ap40", "ap50", "ap60")  # the original work's table, and the challenge's score
TWIN_METRICS = ("auprc_in_lung", "auroc_in_lung", "lesion_recall", "false_change_in_lung", "identity_change", "ssim", "auprc")


def print_json(report: dict) -> None:
    """The report as one strict JSON object on one line, the last that `--json` prints."""
    print(json.dumps(report, allow_nan=False), flush=True)


def cell(stat: dict | None) -> str:
    """mean +- sd, the sd only where there were several runs; '-' for a metric a row lacks."""
    if stat is None or stat["mean"] is None:
        return "-"
    spread = f" +- {stat['sd']:.4f}" if stat["n"] > 1 else ""
    return f"{stat['mean']:.4f}{spread}"


def table(report: dict, metrics: Sequence[str] = (), *, by_metric: bool = False) -> list[str]:
    """Rows x metrics (every metric when none are named), one line per row; `by_metric` turns it so
    there is one line per metric and one column per row (for few rows and many metrics)."""
    rows = report["rows"]
    metrics = list(metrics) or list(dict.fromkeys(metric for values in rows.values() for metric in values))
    grid = [["", *metrics]] + [[row, *(cell(values.get(metric)) for metric in metrics)] for row, values in rows.items()]
    if by_metric:
        grid = [list(column) for column in zip(*grid)]
    widths = [max(len(line[i]) for line in grid) for i in range(len(grid[0]))]
    return [
        "  " + line[0].ljust(widths[0]) + "".join(f"  {text:>{width}}" for text, width in zip(line[1:], widths[1:]))
        for line in grid
    ]


def print_table(title: str, report: dict, metrics: Sequence[str] = (), *, by_metric: bool = False) -> None:
    print(title)
    print("\n".join(table(report, metrics, by_metric=by_metric)))


def _models(protocol: dict) -> str:
    """name vN per model; a model trained once per seed lists its versions."""
    versions = lambda v: ",".join(map(str, v)) if isinstance(v, list) else str(v)  # noqa: E731
    return ", ".join(f"{name} v{versions(version)}" for name, version in protocol["models"].items())


def print_segmentation_report(report: dict) -> None:
    """`twinray eval segmentation`: one line per Dice score."""
    scored = report["protocol"]["splits"]["scored"]
    title = f"{_models(report['protocol'])} on {scored['dataset']}/{scored['split']} ({scored['images']} images)"
    print_table(title, report, by_metric=True)


def print_twin_report(report: dict) -> None:
    """`twinray eval normal-synthesis`: the headline metrics per row, then in-lung AUPRC and lesion recall
    per pathology class (what a row lacks prints as '-')."""
    protocol = report["protocol"]
    scored = protocol["splits"]["scored"]
    counts = f"{scored['abnormal_images']} abnormal, {scored['normal_images']} normal images"
    seeds = f"mean +- sd over seeds {protocol['seeds']}" if protocol["seeds"] else "one run each"
    print_table(
        f"healthy twins on {scored['dataset']}/{scored['split']} ({counts}; {seeds}; {_models(protocol)})", report, TWIN_METRICS
    )
    classes = [metric.split("/", 1)[1] for metric in report["rows"]["do_nothing"] if metric.startswith("auprc_in_lung/")]
    per_class = [f"{metric}/{name}" for name in classes for metric in ("auprc_in_lung", "lesion_share_in_lung", "lesion_recall")]
    print_table(
        "per pathology class (lesion_share_in_lung: what a random score's AUPRC would be)", report, per_class, by_metric=True
    )
    print(f"  selection: {protocol['selection']}")


def print_defect_report(report: dict) -> None:
    """`twinray eval defect-augmentation`: one line per row, the headline metrics, then the chosen shares."""
    protocol = report["protocol"]
    scored = ", ".join(f"{count} {name}" for name, count in protocol["splits"]["scored"].items())
    runs = len(protocol["seeds"]["segmenter"])
    print_table(
        f"defect segmentation on {protocol['dataset']} held-out images ({scored}; mean +- sd over {runs} segmenter "
        "seed(s); gain relative to real_only at the same k; KID and diversity in the features of the project's crop classifier)",
        report,
        DEFECT_METRICS,
    )
    shares = ", ".join(f"{row} {chosen['share']:g}" for row, chosen in protocol["selection"]["rows"].items())
    print(f"  batch share chosen on the val splits: {shares}")


def print_detection_report(report: dict) -> None:
    """`twinray eval detection`: the ablation table, then mAP per pathology, then what val chose."""
    protocol = report["protocol"]
    scored = protocol["splits"]["scored"]
    print_table(
        f"lesion detection on {scored['dataset']}/{scored['split']} ({scored['images']} images; mean +- sd over seeds "
        f"{protocol['seeds']}; {protocol['budget']['epochs']} epochs a row)",
        report,
        DETECTION_METRICS,
    )
    per_class = [metric for metric in report["rows"]["baseline"] if metric.startswith("map/")]
    print_table("mAP per pathology (a predicted box counts for its predicted class)", report, per_class)
    print(f"  selection: {protocol['selection']}")
    print(f"  tools: {_models(protocol)}, trained on {protocol['models_trained_on']}")

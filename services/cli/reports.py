"""Evaluation reports as tables a person reads in a terminal (`--json` prints the report itself)."""

from __future__ import annotations

TWIN_METHODS = ("cyclegan", "anatomy_prior")  # the baseline translator, then the anatomy-conditioned generator


def print_twin_report(report: dict) -> None:
    """`evaluate_published`'s report as a table: one row per metric, one column per method."""
    seg = report["segmentation"]
    counts = ", ".join(
        f"{report[key]} {key.replace('_', ' ')}" for key in ("images", "abnormal_images", "normal_images") if key in report
    )
    print(f"healthy twins on {report['dataset']}/{report['split']} ({counts}; anatomy by {seg['name']} v{seg['version']})")
    columns = {method: report[method] for method in TWIN_METHODS}
    versions = {method: f"{c['model']['name']} v{c['model']['version']}" for method, c in columns.items()}
    print(f"  {'':<20}" + "".join(f"{method:>22}" for method in columns))
    print(f"  {'':<20}" + "".join(f"{version:>22}" for version in versions.values()))
    metrics = dict.fromkeys(key for c in columns.values() for key in c if key != "model")  # every key, in order
    for key in metrics:
        print(f"  {key:<20}" + "".join(f"{c[key]:>22.4f}" if key in c else f"{'-':>22}" for c in columns.values()))

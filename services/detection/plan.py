"""What a published detector reads beside the image, from what its training recorded.

A residual detector (concat, attention) learnt from one twin model's residuals (training.json's
`twin_residuals.model`: the generator with its segmenter, or the raw translator); serving it any
other twin would feed it a quantity it never saw, so the service asks for exactly that version and
first checks it still holds the weights the residuals came from. The anatomy detector reads the
segmenter version it was trained with (training.json's `segmentation`). The default score threshold
is the one training chose on val (metrics.json's `val_score_threshold`).
"""

from __future__ import annotations

import dataclasses
import json

from twinray.shared.models.detection.network import DetectorConfig
from twinray.shared.platform.errors import FailedPrecondition, NotFound
from twinray.shared.platform.registry import ModelRegistry

MODEL_NAME = "detection"
GENERATOR, TRANSLATOR = "normal-synthesis", "matching-pairs"
RESIDUAL_VARIANTS = ("concat", "attention")


@dataclasses.dataclass(frozen=True)
class DetectorPlan:
    variant: str
    min_score: float  # the confidence threshold chosen on val
    twin: str = ""  # GENERATOR or TRANSLATOR for a residual variant, else ""
    twin_version: int = 0
    segmentation_version: int = 0  # the generator's segmenter, or the anatomy variant's; 0 = none


def _check_unchanged(registry: ModelRegistry, made_by: dict, what: str) -> None:
    """The recorded model (and its segmenter) are still published with the same weights."""
    for model in (made_by, made_by.get("segmenter")):
        if model is None:
            continue
        try:
            published = registry.manifest(model["name"], model["version"])["weights_sha256"]
        except NotFound:
            published = None
        if published != model["weights_sha256"]:
            state = "is no longer published" if published is None else "now holds other weights"
            raise FailedPrecondition(
                f"{what} learnt from residuals made by {model['name']} version {model['version']}, which {state}: "
                f"retrain the detector on residuals of a published twin model"
            )


def detector_plan(registry: ModelRegistry, version: int, config: DetectorConfig) -> DetectorPlan:
    """The plan of published detection `version` (whose config is `config`)."""
    training = json.loads(registry.read_file(MODEL_NAME, version, "training.json"))
    metrics = json.loads(registry.read_file(MODEL_NAME, version, "metrics.json"))
    min_score = float(metrics.get("val_score_threshold", config.score_threshold))
    what = f"detection version {version} ({config.variant})"
    if config.variant in RESIDUAL_VARIANTS:
        made_by = training.get("twin_residuals", {}).get("model")
        if not made_by or made_by.get("name") not in (GENERATOR, TRANSLATOR):
            raise FailedPrecondition(
                f"{what} records no twin model in its training.json: retrain it with `twinray train detection`"
            )
        _check_unchanged(registry, made_by, what)
        segmenter = made_by.get("segmenter", {}).get("version", 0)
        return DetectorPlan(config.variant, min_score, made_by["name"], int(made_by["version"]), int(segmenter))
    if config.variant == "anatomy":
        segmentation = training.get("segmentation", {}).get("version")
        if segmentation is None:
            raise FailedPrecondition(f"{what} records no segmentation version in its training.json: retrain it")
        return DetectorPlan(config.variant, min_score, segmentation_version=int(segmentation))
    return DetectorPlan(config.variant, min_score)

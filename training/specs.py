"""Every model `twinray train <name>` trains, by name: the CLI's subcommands and the contract test
are generated from this one table."""

from __future__ import annotations

from twinray.training import ddpm, defect_encoder, detection, matching_pairs, normal_synthesis, segmentation
from twinray.training.harness import TrainSpec

TRAIN_SPECS: dict[str, TrainSpec] = {
    spec.name: spec
    for spec in (
        segmentation.SPEC,
        matching_pairs.SPEC,
        normal_synthesis.SPEC,
        ddpm.SPECS["mask"],
        ddpm.SPECS["image"],
        defect_encoder.SPEC,
        detection.SPEC,
    )
}

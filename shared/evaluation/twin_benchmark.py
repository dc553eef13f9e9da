"""The healthy-twin benchmark: does subtracting an imagined twin find disease better than looking at the
image alone? Every twin model beside the rows a sceptic asks for first, on held-out phantoms whose
true twins, lesion masks and pathology classes are known, per class, over seeds.

Rows (the report's keys, in this order):
- `do_nothing`: the twin is the image (residual 0);
- `lung_intensity`: the image itself inside the segmenter's lungs, as the lesion score;
- `lung_highpass`: the image minus its blur inside the segmenter's (eroded) lungs, its setting chosen
  on val by in-lung AUPRC WITH the val lesion masks (an advantage real data would not give it);
- `cyclegan` / `cyclegan_calibrated`: the matching-pairs translator's twin, raw and with the calibration
  its pseudo-pairs use (twinray.shared.synthesis.pseudo_pairs.calibrated_twin);
- `no_anatomy`: the normal-synthesis generator trained without the anatomy map (ablation);
- `anatomy_prior`: the anatomy-conditioned (SPADE) generator.
Metrics (twinray.shared.evaluation.residual_metrics) are measured inside the TRUE lung fields (and
over the whole image); the no-learning rows only have a score map, so no lesion recall.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from twinray.shared.data.anatomy import LUNGS
from twinray.shared.data.phantoms.dataset import PhantomArrays
from twinray.shared.data.phantoms.pathologies import PATHOLOGIES
from twinray.shared.evaluation.no_learning import HIGHPASS_GRID, choose_on_val, lung_intensity
from twinray.shared.evaluation.report import Stat, over_runs, single
from twinray.shared.evaluation.residual_metrics import score_map, score_twin
from twinray.shared.models.components.twin import TwinFunction, batched
from twinray.shared.models.normal_synthesis.network import segment_anatomy
from twinray.shared.platform.imaging import unit_images

ROWS = ("do_nothing", "lung_intensity", "lung_highpass", "cyclegan", "cyclegan_calibrated", "no_anatomy", "anatomy_prior")
HIGHPASS_SELECTION = "lung_highpass: the HIGHPASS_GRID setting with the best in-lung AUPRC on val, chosen with val lesion masks"


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """One held-out split as tensors: its abnormal images with everything the metrics need, and its normals."""

    image: torch.Tensor  # (N,1,H,W) in [0, 1], abnormal
    true_twin: torch.Tensor  # (N,1,H,W)
    lesion_labels: torch.Tensor  # (N,H,W) int64, 0 = none, i + 1 = lesion i
    lesion_classes: torch.Tensor  # (N,L) int64, PATHOLOGIES indices, -1 padding
    lung_field: torch.Tensor  # (N,H,W) bool, the true lung fields
    normal: torch.Tensor  # (M,1,H,W) in [0, 1]

    @classmethod
    def of(cls, arrays: PhantomArrays) -> HeldOut:
        abnormal = arrays.lesion_seed >= 0
        if not abnormal.any() or abnormal.all():
            raise ValueError("the twin benchmark needs both abnormal and normal images")
        return cls(
            image=unit_images(arrays.image[abnormal]),
            true_twin=unit_images(arrays.twin[abnormal]),
            lesion_labels=torch.from_numpy(arrays.lesion_labels[abnormal].astype("int64")),
            lesion_classes=torch.from_numpy(arrays.lesion_classes[abnormal].astype("int64")),
            lung_field=torch.from_numpy(arrays.lung_field[abnormal]),
            normal=unit_images(arrays.image[~abnormal]),
        )


def segmented_lungs(segmenter: torch.nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The segmenter's lung labels of images (N,1,H,W) at their own size (N,H,W) bool: what a method
    that has only the image and the segmenter knows of the lungs."""
    labels = batched(lambda x: segment_anatomy(segmenter, x)[:, None].float(), images, device)
    labels = F.interpolate(labels, size=images.shape[-2:], mode="nearest-exact")[:, 0].long()
    return torch.isin(labels, torch.tensor(LUNGS))


def no_learning_rows(
    val: HeldOut, test: HeldOut, segmenter: torch.nn.Module, device: torch.device
) -> tuple[dict[str, dict[str, float]], str]:
    """`do_nothing`, `lung_intensity` and `lung_highpass` on `test` (the high-pass setting chosen on `val`),
    and the chosen setting's name."""
    val_lungs, test_lungs = segmented_lungs(segmenter, val.image, device), segmented_lungs(segmenter, test.image, device)
    chosen, _ = choose_on_val(HIGHPASS_GRID, val.image, val.lesion_labels > 0, val_lungs)
    maps = {
        "lung_intensity": lung_intensity(test.image, test_lungs),
        "lung_highpass": HIGHPASS_GRID[chosen](test.image, test_lungs),
    }
    rows = {"do_nothing": _twin_scores(test, test.image, test.normal)}
    for row, score in maps.items():
        rows[row] = score_map(score, test.lesion_labels, test.lesion_classes, test.lung_field, PATHOLOGIES)
    return rows, chosen


def twin_rows(test: HeldOut, twins: Mapping[str, TwinFunction], device: torch.device) -> dict[str, dict[str, float]]:
    """Every twin function's scores on `test`, by row."""
    return {
        row: _twin_scores(test, batched(fn, test.image, device), batched(fn, test.normal, device)) for row, fn in twins.items()
    }


def _twin_scores(test: HeldOut, twin: torch.Tensor, normal_twin: torch.Tensor) -> dict[str, float]:
    return score_twin(
        test.image,
        twin,
        test.true_twin,
        test.lesion_labels,
        test.lesion_classes,
        test.lung_field,
        test.normal,
        normal_twin,
        PATHOLOGIES,
    )


def benchmark_rows(
    once: Mapping[str, Mapping[str, float]], runs: Sequence[Mapping[str, Mapping[str, float]]]
) -> dict[str, dict[str, Stat]]:
    """The report's rows in ROWS order: `once` computed a single time (no learning), `runs` one per seed
    (each a mapping row -> metrics), as mean and spread over the seeds."""
    rows: dict[str, dict[str, Stat]] = {
        row: {metric: single(value) for metric, value in metrics.items()} for row, metrics in once.items()
    }
    for row in dict.fromkeys(row for run in runs for row in run):
        metrics = runs[0][row]
        rows[row] = {metric: over_runs([run[row][metric] for run in runs]) for metric in metrics}
    return {row: rows[row] for row in ROWS if row in rows}

"""Pictures of a lesion detector, for the eval and demo commands to write beside their numbers: a
score says how often the detector is right, these show where and why it is right or wrong.

- `detection_figure`: one row per case: the input with the true boxes (green, pathology name above)
  and the predicted ones (red, "pathology score" below), the residual (image - twin) as a heat map
  over the input, and the healthy twin. It shows whether the detector fires where the twin says the
  image differs, and which misses the residual could have prevented. Pass the predictions kept at
  the confidence threshold chosen on val (`best_threshold_rsna`), not every low-score anchor.
- `attention_figure`: for the attention variant, the residual it reads and each pyramid level's
  learned gate over the input, titled with the level's stride. It shows whether the gates follow the
  residual, and at which scales, i.e. whether the attention does what the ablation credits it for.

Colours follow services/cli/figures.py (grey images on [0, 1], residual magnitude in inferno on one
scale per figure). Figures render on matplotlib's Agg canvas without pyplot (no global state, safe in
worker threads) and a PNG is written atomically, so a reader never sees half a figure.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from twinray.shared.data.phantoms.pathologies import PATHOLOGIES
from twinray.shared.models.detection.network import LEVELS, LesionDetector, attention_maps
from twinray.shared.platform.storage.local import write_atomically

TRUE_COLOUR, PREDICTED_COLOUR = "lime", "red"
PANEL_INCHES, DPI = 3.0, 90


@dataclasses.dataclass(frozen=True)
class DetectionCase:
    """One row of `detection_figure`. Boxes are (K, 4) xyxy in pixels of `image` (H, W) in [0, 1];
    classes index PATHOLOGIES; `residual` is image - twin (signed); the twin and residual are optional
    (a baseline detector has none)."""

    image: np.ndarray
    true_boxes: np.ndarray
    true_classes: np.ndarray
    pred_boxes: np.ndarray
    pred_scores: np.ndarray
    pred_classes: np.ndarray
    residual: np.ndarray | None = None
    twin: np.ndarray | None = None
    title: str = ""

    def __post_init__(self) -> None:
        """Mismatched lengths would otherwise label boxes wrongly without a word (zip truncates)."""
        for boxes, *parallel in ((self.true_boxes, self.true_classes), (self.pred_boxes, self.pred_scores, self.pred_classes)):
            if np.ndim(boxes) != 2 or np.shape(boxes)[1] != 4 or any(len(values) != len(boxes) for values in parallel):
                raise ValueError("boxes must be (K, 4) with one class (and one score) per box")


def detection_figure(cases: Sequence[DetectionCase], path: Path) -> Path:
    """Draw `cases` one per row (input with boxes, then residual and twin when any case has them; a
    panel a case lacks stays blank) into the PNG `path`, and return it."""
    if not cases:
        raise ValueError("a detection figure needs at least one case")
    columns = [name for name in ("residual", "twin") if any(getattr(case, name) is not None for case in cases)]
    fig, axes = _grid(len(cases), 1 + len(columns))
    top = _scale([case.residual for case in cases if case.residual is not None])
    for row, case in zip(axes, cases):
        panel = dict(zip(columns, row[1:]))
        _boxes_panel(row[0], case)
        if case.residual is not None:
            _residual_panel(panel["residual"], case.image, case.residual, top)
        if case.twin is not None:
            _show(panel["twin"], case.twin, cmap="gray", vmin=0, vmax=1)
            panel["twin"].set_title("healthy twin")
    return _save(fig, path)


def attention_figure(model: LesionDetector, inputs: torch.Tensor, path: Path) -> Path:
    """Draw, one row per image of the attention detector's stacked inputs (N, 2, S, S) from
    `detector_inputs` (on its device), its residual and each level's gate in (0, 1) over the image into the PNG
    `path`, and return it. Puts the model in eval mode, as `detect` does."""
    if model.config.variant != "attention":
        raise ValueError(f"an attention figure needs the attention detector, this one is {model.config.variant!r}")
    if inputs.ndim != 4 or inputs.shape[1] != 2:
        raise ValueError(f"inputs must be (N, 2, S, S) [image, residual] from detector_inputs, got {tuple(inputs.shape)}")
    maps = {level: gates[:, 0].cpu().numpy() for level, gates in attention_maps(model.eval(), inputs).items()}
    images, residuals = inputs[:, 0].cpu().numpy(), inputs[:, 1].cpu().numpy()
    top = _scale(list(residuals))
    fig, axes = _grid(len(inputs), 1 + len(LEVELS))
    for index, row in enumerate(axes):
        _residual_panel(row[0], images[index], residuals[index], top)
        for ax, level in zip(row[1:], LEVELS):
            gate = maps[level][index]
            _show(ax, images[index], cmap="gray", vmin=0, vmax=1)
            _show(ax, gate, cmap="viridis", vmin=0, vmax=1, alpha=0.6, interpolation="nearest", extent=_extent(images[index]))
            ax.set_title(f"{level}, stride {2 ** int(level[1:])}\ngate {gate.min():.2f}-{gate.max():.2f}")
    return _save(fig, path)


def _grid(rows: int, columns: int) -> tuple[Figure, np.ndarray]:
    """A figure of rows x columns square panels without axes."""
    fig = Figure(figsize=(PANEL_INCHES * columns, PANEL_INCHES * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


def _extent(image: np.ndarray) -> tuple[float, float, float, float]:
    """Pixel i spans [i, i + 1], as box coordinates count; a coarser map given this extent covers
    the same image area."""
    height, width = np.shape(image)
    return (0, width, height, 0)


def _show(ax: Axes, array: np.ndarray, **style: Any) -> None:
    ax.imshow(array, **{"extent": _extent(array), **style})


def _scale(residuals: Sequence[np.ndarray]) -> float:
    """One heat-map top for a whole figure, so rows compare."""
    return max((float(np.abs(residual).max()) for residual in residuals), default=0.0) or 1.0


def _residual_panel(ax: Axes, image: np.ndarray, residual: np.ndarray, top: float) -> None:
    _show(ax, image, cmap="gray", vmin=0, vmax=1)
    _show(ax, np.ma.masked_less(np.abs(residual), 0.02 * top), cmap="inferno", vmin=0, vmax=top, alpha=0.7)
    ax.set_title("residual |image - twin|")


def _boxes_panel(ax: Axes, case: DetectionCase) -> None:
    """Truth named above its box, predictions named with their score below theirs, so the labels of a
    hit do not cover each other."""
    _show(ax, case.image, cmap="gray", vmin=0, vmax=1)
    true_labels = [PATHOLOGIES[int(c)] for c in case.true_classes]
    pred_labels = [f"{PATHOLOGIES[int(c)]} {float(s):.2f}" for c, s in zip(case.pred_classes, case.pred_scores)]
    _draw_boxes(ax, case.true_boxes, true_labels, TRUE_COLOUR, above=True)
    _draw_boxes(ax, case.pred_boxes, pred_labels, PREDICTED_COLOUR, above=False)
    ax.set_title("\n".join(filter(None, [case.title, "truth (green), prediction (red)"])))


def _draw_boxes(ax: Axes, boxes: np.ndarray, labels: list[str], colour: str, *, above: bool) -> None:
    for (x1, y1, x2, y2), label in zip(np.asarray(boxes, dtype=float), labels):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.2))
        ax.text(
            x1,
            y1 if above else y2,
            label,
            color=colour,
            fontsize=6,
            va="bottom" if above else "top",
            clip_on=True,
            bbox={"facecolor": "black", "alpha": 0.5, "pad": 0.5, "linewidth": 0},
        )


def _save(fig: Figure, path: Path) -> Path:
    """Render in memory, then write via a temp file + rename, so a figure on disk is always whole."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    write_atomically(path, [buffer.getvalue()])
    return path

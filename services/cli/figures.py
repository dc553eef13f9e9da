"""PNG figures a person looks at instead of reading numbers (demo and reports)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from twinray.shared.data.anatomy import ANATOMY_CLASSES  # noqa: E402


def segmentation_figure(cases: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]], path: Path) -> Path:
    """One row per case: image, ground-truth anatomy, predicted anatomy (with its Dice)."""
    fig, axes = plt.subplots(len(cases), 3, figsize=(9, 3 * len(cases)), squeeze=False)
    cmap = plt.get_cmap("tab10", len(ANATOMY_CLASSES))
    for row, (image, truth, pred, dice) in zip(axes, cases):
        row[0].imshow(image, cmap="gray", vmin=0, vmax=1)
        row[0].set_title("input")
        for ax, labels, title in ((row[1], truth, "ground truth"), (row[2], pred, f"prediction (Dice {dice:.3f})")):
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax.imshow(np.ma.masked_equal(labels, 0), cmap=cmap, vmin=0, vmax=len(ANATOMY_CLASSES) - 1, alpha=0.55)
            ax.set_title(title)
        for ax in row:
            ax.axis("off")
    return _save(fig, path)


def twin_figure(cases: list[dict[str, np.ndarray]], path: Path) -> Path:
    """One row per case: input, anatomy map, healthy twin, residual heat map over the input with the
    true lesion outline. Each case holds `image`, `anatomy`, `twin`, `residual`, `lesion_mask`, and may
    hold a `title` for its row (e.g. its pathology class)."""
    fig, axes = plt.subplots(len(cases), 4, figsize=(12, 3 * len(cases)), squeeze=False)
    cmap = plt.get_cmap("tab10", len(ANATOMY_CLASSES))
    top = max(float(np.abs(case["residual"]).max()) for case in cases) or 1.0
    for row, case in zip(axes, cases):
        row[0].imshow(case["image"], cmap="gray", vmin=0, vmax=1)
        row[0].set_title(f"input: {case['title']}" if "title" in case else "input")
        row[1].imshow(case["image"], cmap="gray", vmin=0, vmax=1)
        row[1].imshow(np.ma.masked_equal(case["anatomy"], 0), cmap=cmap, vmin=0, vmax=len(ANATOMY_CLASSES) - 1, alpha=0.55)
        row[1].set_title("anatomy map")
        row[2].imshow(case["twin"], cmap="gray", vmin=0, vmax=1)
        row[2].set_title("healthy twin")
        row[3].imshow(case["image"], cmap="gray", vmin=0, vmax=1)
        row[3].imshow(np.ma.masked_less(np.abs(case["residual"]), 0.02 * top), cmap="inferno", vmin=0, vmax=top, alpha=0.7)
        if case["lesion_mask"].any():
            row[3].contour(case["lesion_mask"], levels=[0.5], colors="cyan", linewidths=0.8)
        row[3].set_title("residual (cyan: true lesion)")
        for ax in row:
            ax.axis("off")
    return _save(fig, path)


def defect_gallery(synthetic: list[dict[str, np.ndarray]], real: list[dict[str, np.ndarray]], title: str, path: Path) -> Path:
    """One row per synthetic case: normal image, mask, synthetic defect (mask outlined), and a REAL
    defect beside it for comparison (cycled when there are fewer). Cases hold `normal`, `mask`,
    `image`; real ones `image` and `mask`."""
    if not synthetic or not real:
        raise ValueError("a defect gallery needs at least one synthetic and one real case")
    fig, axes = plt.subplots(len(synthetic), 4, figsize=(10, 2.6 * len(synthetic)), squeeze=False)
    fig.suptitle(title)
    for index, (row, case) in enumerate(zip(axes, synthetic)):
        other = real[index % len(real)]
        panels = (
            (case["normal"], None, "normal"),
            (case["mask"].astype(float), None, "mask"),
            (case["image"], case["mask"], "synthetic defect"),
            (other["image"], other["mask"], "real defect"),
        )
        for ax, (image, outline, name) in zip(row, panels):
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            if outline is not None and outline.any():
                ax.contour(outline, levels=[0.5], colors="red", linewidths=0.6)
            ax.set_title(name)
            ax.axis("off")
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    """Write then rename, so a figure on disk is always whole."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)
    return path

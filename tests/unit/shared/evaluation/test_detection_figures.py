"""The detection pictures: whole PNGs of the promised panel grid, drawn from a real (tiny, untrained)
detector's output, with boxes where the coordinates say and in the colour of their kind."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from twinray.shared.evaluation.detection_figures import (
    DPI,
    PANEL_INCHES,
    DetectionCase,
    attention_figure,
    detection_figure,
)
from twinray.shared.models.detection.network import LEVELS, DetectorConfig, LesionDetector, detect, detector_inputs

SIZE = 64
TINY = DetectorConfig(
    variant="attention", input_size=SIZE, fpn_channels=16, attention_hidden=4, score_threshold=0.0, detections_per_image=10
)
PANEL = round(PANEL_INCHES * DPI)  # pixels per panel side
NO_BOXES = np.zeros((0, 4))


def _pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB")).astype(int)


def _detector(variant: str = "attention") -> LesionDetector:
    torch.manual_seed(0)
    return LesionDetector(dataclasses.replace(TINY, variant=variant))


def _inputs(n: int = 2) -> torch.Tensor:
    """Images with a bright lesion square whose twin lacks it, so the residual marks the lesion."""
    generator = torch.Generator().manual_seed(1)
    twin = 0.3 + 0.2 * torch.rand(n, 1, SIZE, SIZE, generator=generator)
    image = twin.clone()
    image[:, :, 20:40, 10:30] += 0.3
    return detector_inputs(TINY, image, image - twin)


def _grey(true_boxes: np.ndarray = NO_BOXES, pred_boxes: np.ndarray = NO_BOXES) -> DetectionCase:
    """A uniform grey image, so any box drawn shows against it."""
    return DetectionCase(
        image=np.full((SIZE, SIZE), 0.5),
        true_boxes=true_boxes,
        true_classes=np.zeros(len(true_boxes), dtype=int),
        pred_boxes=pred_boxes,
        pred_scores=np.full(len(pred_boxes), 0.9),
        pred_classes=np.zeros(len(pred_boxes), dtype=int),
        title="grey",
    )


def test_detection_figure_draws_a_row_per_case_of_a_real_detectors_output(tmp_path):
    inputs = _inputs()
    found = detect(_detector(), inputs, torch.device("cpu"))
    assert all(len(image["boxes"]) for image in found)  # score_threshold 0: the boxes are drawn
    cases = [
        DetectionCase(
            image=inputs[i, 0].numpy(),
            true_boxes=np.array([[10.0, 20.0, 30.0, 40.0]]),
            true_classes=np.array([1]),
            pred_boxes=found[i]["boxes"].numpy(),
            pred_scores=found[i]["scores"].numpy(),
            pred_classes=found[i]["labels"].numpy(),
            residual=inputs[i, 1].numpy() if i == 0 else None,  # a panel a case lacks stays blank
            twin=(inputs[i, 0] - inputs[i, 1]).numpy(),
            title=f"case {i}",
        )
        for i in range(2)
    ]
    full = _pixels(detection_figure(cases, tmp_path / "full.png"))
    bare = _pixels(detection_figure([dataclasses.replace(cases[0], residual=None, twin=None)], tmp_path / "bare.png"))
    assert full.shape[:2] == (2 * PANEL, 3 * PANEL)  # rows x (input, residual, twin)
    assert bare.shape[:2] == (PANEL, PANEL)  # no residual or twin anywhere: the input alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.png", "full.png"]  # no temp file left


def _image_area(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the uniform grey image in a figure: the rows and columns that are
    mostly that grey (title text cannot fill a line of it)."""
    grey = (np.abs(pixels - 128) <= 2).all(axis=-1)
    rows, cols = np.nonzero(grey.sum(axis=1) > 50)[0], np.nonzero(grey.sum(axis=0) > 50)[0]
    return rows[0], cols[0], rows[-1] + 1, cols[-1] + 1


def test_boxes_are_drawn_at_their_coordinates_in_the_colour_of_their_kind(tmp_path):
    box = np.array([[8.0, 20.0, 40.0, 56.0]])  # x1, y1, x2, y2: not square, so swapped axes would show
    plain = _pixels(detection_figure([_grey()], tmp_path / "plain.png"))
    truth = _pixels(detection_figure([_grey(true_boxes=box)], tmp_path / "truth.png"))
    guess = _pixels(detection_figure([_grey(pred_boxes=box)], tmp_path / "guess.png"))
    top, left, bottom, right = _image_area(plain)
    assert bottom - top == pytest.approx(right - left, abs=2)

    def at(x: float, y: float) -> tuple[slice, slice]:  # a small window around image point (x, y)
        row, col = round(top + y / SIZE * (bottom - top)), round(left + x / SIZE * (right - left))
        return slice(row - 2, row + 3), slice(col - 2, col + 3)

    def greenish(p: np.ndarray) -> np.ndarray:
        return (p[..., 1] > p[..., 0] + 60) & (p[..., 1] > p[..., 2] + 60)

    def reddish(p: np.ndarray) -> np.ndarray:
        return (p[..., 0] > p[..., 1] + 60) & (p[..., 0] > p[..., 2] + 60)

    edges = [(8, 38), (40, 38), (24, 20), (24, 56)]  # the middle of the left, right, top and bottom edges
    for x, y in edges:
        assert not (greenish(plain[at(x, y)]).any() or reddish(plain[at(x, y)]).any())
        assert greenish(truth[at(x, y)]).any() and not reddish(truth[at(x, y)]).any()
        assert reddish(guess[at(x, y)]).any() and not greenish(guess[at(x, y)]).any()
    for x, y in [(24, 38), (56, 8), (56, 38), (24, 8)]:  # inside the box, and where a transposed box would be
        assert (truth[at(x, y)] == plain[at(x, y)]).all() and (guess[at(x, y)] == plain[at(x, y)]).all()


def test_attention_figure_shows_the_residual_and_a_gate_per_level(tmp_path):
    path = attention_figure(_detector().train(), _inputs(3), tmp_path / "attention.png")
    assert _pixels(path).shape[:2] == (3 * PANEL, (1 + len(LEVELS)) * PANEL)


def test_attention_figure_refuses_a_detector_without_attention_and_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="needs the attention detector, this one is 'concat'"):
        attention_figure(_detector("concat"), _inputs(), tmp_path / "concat.png")
    with pytest.raises(ValueError, match=r"\(N, 2, S, S\)"):
        attention_figure(_detector(), _inputs()[:, :1], tmp_path / "image_only.png")
    assert not list(tmp_path.iterdir())


def test_a_case_refuses_boxes_without_one_label_each():
    with pytest.raises(ValueError, match="one class"):
        dataclasses.replace(_grey(), pred_boxes=np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"\(K, 4\)"):
        dataclasses.replace(_grey(), true_boxes=np.zeros(4))

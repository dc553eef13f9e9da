"""The figures are whole PNGs of the layout they promise (rows x panels), written atomically."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from twinray.services.cli.figures import defect_gallery, segmentation_figure, twin_figure


def _png_size(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_defect_gallery_has_a_row_per_synthetic_case(tmp_path):
    rng = np.random.default_rng(0)
    mask = np.zeros((32, 32), bool)
    mask[10:20, 12:18] = True
    case = {"normal": rng.random((32, 32)), "mask": mask, "image": rng.random((32, 32))}
    one = defect_gallery([case], [{"image": rng.random((32, 32)), "mask": mask}], "mask_blend", tmp_path / "one.png")
    three = defect_gallery([case] * 3, [{"image": rng.random((32, 32)), "mask": mask}], "mask_blend", tmp_path / "three.png")
    (w1, h1), (w3, h3) = _png_size(one), _png_size(three)
    assert w1 == w3 and h3 > 2.5 * h1
    assert not list(tmp_path.glob("*.tmp.png"))
    with pytest.raises(ValueError, match="at least one"):
        defect_gallery([], [], "mask_blend", tmp_path / "none.png")


def test_twin_and_segmentation_figures(tmp_path):
    rng = np.random.default_rng(1)
    image, labels = rng.random((32, 32)), rng.integers(0, 8, (32, 32))
    lesion = np.zeros((32, 32), bool)
    lesion[5:9, 5:9] = True
    twin_case = {"image": image, "anatomy": labels, "twin": image * 0.9, "residual": image * 0.1, "lesion_mask": lesion}
    assert _png_size(twin_figure([twin_case, {**twin_case, "title": "pneumothorax"}], tmp_path / "twin.png"))[0] > 0
    assert _png_size(segmentation_figure([(image, labels, labels, 1.0)], tmp_path / "seg.png"))[0] > 0

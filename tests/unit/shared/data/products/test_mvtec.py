"""The MVTec AD folder loader on small PNG files written in that layout (RGB and grey inputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from twinray.shared.data.products.mvtec import load_mvtec, mvtec_categories
from twinray.shared.platform.errors import InvalidInput


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _grey(value: int, side: int = 40) -> np.ndarray:
    return np.full((side, side), value, np.uint8)


def _rgb(rgb: tuple[int, int, int], side: int = 40) -> np.ndarray:
    return np.tile(np.array(rgb, np.uint8), (side, side, 1))


def _square_mask(side: int = 40) -> np.ndarray:
    mask = np.zeros((side, side), np.uint8)
    mask[10:30, 0:20] = 255  # rows 10-29, columns 0-19
    return mask


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """bottle: 2 grey + 1 RGB train images; test: 1 good, 2 'broken' (RGB, grey), 1 'crack'."""
    base = tmp_path / "mvtec" / "bottle"
    _png(base / "train/good/000.png", _grey(51))
    _png(base / "train/good/001.png", _grey(204))
    _png(base / "train/good/002.png", _rgb((255, 0, 0)))
    _png(base / "test/good/000.png", _grey(100))
    _png(base / "test/broken/000.png", _rgb((0, 0, 255)))
    _png(base / "test/broken/001.png", _grey(10))
    _png(base / "test/crack/000.png", _grey(20))
    _png(base / "ground_truth/broken/000_mask.png", _square_mask())
    _png(base / "ground_truth/broken/001_mask.png", _square_mask())
    _png(base / "ground_truth/crack/000_mask.png", _square_mask())
    (base / "test/broken/notes.txt").write_text("not an image")
    (tmp_path / "mvtec" / "readme").mkdir()  # not a category
    return tmp_path / "mvtec"


def test_train_split_is_good_grey_in_unit_range(root: Path) -> None:
    train = load_mvtec(root, "bottle", "train", 16)
    assert train.images.shape == train.masks.shape == (3, 16, 16)
    assert train.images.dtype == np.float32 and train.masks.dtype == bool
    assert train.defects == ("good", "good", "good") and not train.masks.any()
    np.testing.assert_allclose(train.images[:, 8, 8], [51 / 255, 204 / 255, 0.299], atol=2e-3)  # RGB -> luma
    assert [p.name for p in train.paths] == ["000.png", "001.png", "002.png"]
    assert mvtec_categories(root) == ["bottle"]


def test_test_split_has_masks_resized_with_the_images(root: Path) -> None:
    test = load_mvtec(root, "bottle", "test", 20)
    assert test.defects == ("broken", "broken", "crack", "good")
    assert test.images.shape == (4, 20, 20)
    np.testing.assert_allclose(test.images[0], 0.114, atol=2e-3)  # blue
    expected = np.zeros((20, 20), bool)
    expected[5:15, 0:10] = True  # the 40 px square mask at half size
    for i in range(3):
        np.testing.assert_array_equal(test.masks[i], expected)
    assert not test.masks[3].any()


def test_missing_category(root: Path) -> None:
    with pytest.raises(InvalidInput, match=r"MVTec category 'cable' not found under .* categories: \['bottle'\]"):
        load_mvtec(root, "cable", "train", 16)
    with pytest.raises(InvalidInput, match="not found"):
        load_mvtec(root / "absent", "bottle", "train", 16)


def test_image_without_a_mask(root: Path) -> None:
    (root / "bottle/ground_truth/crack/000_mask.png").unlink()
    with pytest.raises(InvalidInput, match=r"test/crack/000.png has no mask: expected .*ground_truth/crack/000_mask.png"):
        load_mvtec(root, "bottle", "test", 16)


def test_mask_size_mismatch(root: Path) -> None:
    _png(root / "bottle/ground_truth/broken/001_mask.png", _square_mask(32))
    with pytest.raises(InvalidInput, match="001_mask.png is 32x32 pixels, its image 40x40"):
        load_mvtec(root, "bottle", "test", 16)


def test_unreadable_file(root: Path) -> None:
    (root / "bottle/train/good/001.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(InvalidInput, match=r"train/good/001.png is not a readable PNG"):
        load_mvtec(root, "bottle", "train", 16)
    (root / "bottle/train/good/001.png").write_bytes(b"JFIF")
    with pytest.raises(InvalidInput, match="not a PNG file"):
        load_mvtec(root, "bottle", "train", 16)


def test_bad_arguments_and_empty_folders(root: Path) -> None:
    with pytest.raises(InvalidInput, match="split must be one of train, test"):
        load_mvtec(root, "bottle", "val", 16)
    with pytest.raises(InvalidInput, match="size must be an integer in 8..4096"):
        load_mvtec(root, "bottle", "train", 4)
    for png in (root / "bottle/train/good").iterdir():
        png.unlink()
    with pytest.raises(InvalidInput, match="has no PNG images"):
        load_mvtec(root, "bottle", "train", 16)

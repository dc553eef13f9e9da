"""Loader for datasets in the MVTec AD folder layout.

Real factory data arrives in this layout, so the same training code can run on it as on the
rendered products:

    <root>/<category>/train/good/*.png
    <root>/<category>/test/good/*.png
    <root>/<category>/test/<defect>/*.png
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png

Images (RGB or grey, 8 or 16 bit) become grey float32 in [0, 1] (BT.601 luminance, through the
project's one PNG decoder) resized to `size` x `size`; masks become bool, true where the ground truth
is above half. Good images get empty masks. Every problem is an InvalidInput naming the file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.imaging.decode import decode_png

GOOD = "good"
SPLITS = ("train", "test")
MIN_SIZE, MAX_SIZE = 8, 4096


@dataclasses.dataclass(frozen=True)
class MVTecImages:
    """One split of one category, in a fixed order (defect folders, then files, sorted by name)."""

    images: np.ndarray  # float32 (N, size, size) in [0, 1]
    masks: np.ndarray  # bool (N, size, size); empty for good images
    defects: tuple[str, ...]  # "good" or the defect folder's name, per image
    paths: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.images)


def mvtec_categories(root: Path | str) -> list[str]:
    """The categories under `root`: folders that hold train/good."""
    root = Path(root)
    if not root.is_dir():
        raise InvalidInput(f"MVTec root {root} is not a directory")
    return sorted(p.name for p in root.iterdir() if (p / "train" / GOOD).is_dir())


def _read(path: Path) -> np.ndarray:
    """Grey float32 pixels of a PNG file; InvalidInput naming the file when it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"MVTec file {path} cannot be read: {exc.strerror or exc}") from None
    try:
        return decode_png(data).pixels
    except InvalidInput as exc:
        raise InvalidInput(f"MVTec file {path} is not a readable PNG: {exc}") from None


def _resized(pixels: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize (antialiased when shrinking) of float32 pixels to size x size."""
    if pixels.shape == (size, size):
        return pixels.astype(np.float32)
    resized = Image.fromarray(pixels.astype(np.float32)).resize((size, size), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def _pngs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())


def load_mvtec(root: Path | str, category: str, split: str, size: int) -> MVTecImages:
    """Images and masks of `split` ("train": train/good; "test": every test folder) of `category`."""
    root = Path(root)
    if split not in SPLITS:
        raise InvalidInput(f"MVTec split must be one of {', '.join(SPLITS)}, got {split!r}")
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InvalidInput(f"MVTec image size must be an integer in {MIN_SIZE}..{MAX_SIZE}, got {size!r}")
    named = isinstance(category, str) and category not in ("", ".", "..") and "/" not in category
    base = root / category if named else root
    if not named or not (base / "train" / GOOD).is_dir():
        known = mvtec_categories(root) if root.is_dir() else []
        raise InvalidInput(f"MVTec category {category!r} not found under {root} (no train/good; categories: {known})")
    folder = base / split
    if not folder.is_dir():
        raise InvalidInput(f"MVTec category {category!r} has no {split} folder at {folder}")
    defects = [GOOD] if split == "train" else sorted(p.name for p in folder.iterdir() if p.is_dir())
    images, masks, labels, paths = [], [], [], []
    for defect in defects:
        for path in _pngs(folder / defect):
            pixels = _read(path)
            mask = np.zeros(pixels.shape, bool)
            if defect != GOOD:
                mask_path = base / "ground_truth" / defect / f"{path.stem}_mask.png"
                if not mask_path.is_file():
                    raise InvalidInput(f"MVTec image {path} has no mask: expected {mask_path}")
                mask = _read(mask_path) > 0.5
                if mask.shape != pixels.shape:
                    raise InvalidInput(
                        f"MVTec mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} pixels, "
                        f"its image {pixels.shape[1]}x{pixels.shape[0]}"
                    )
            images.append(_resized(pixels, size))
            masks.append(_resized(mask.astype(np.float32), size) >= 0.5)
            labels.append(defect)
            paths.append(path)
    if not images:
        raise InvalidInput(f"MVTec category {category!r} has no PNG images in {folder}")
    return MVTecImages(np.stack(images), np.stack(masks), tuple(labels), tuple(paths))

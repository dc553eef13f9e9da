"""The detector's data without Ray: a split of a phantom dataset as the detector reads it (images,
boxes, classes and, per variant, the stored twin residuals or the segmenter's anatomy maps; the
training split followed by synthetic abnormal images when asked), and the training config that says
which. `twinray train detection` (Ray Train) and the ablation (in-process) read the same data.

With dataset "rsna" the split comes from the real RSNA Pneumonia Detection download instead
(twinray.shared.data.rsna, a folder on disk, not the artifact store): every box is a lung opacity,
and the images are kept as 8 bits (the Kaggle DICOMs are 8-bit), a quarter of float32's memory.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from twinray.shared.data.phantoms.dataset import PhantomArrays, read_phantom_split
from twinray.shared.data.phantoms.pathologies import OPACITY
from twinray.shared.data.rsna import rsna_split
from twinray.shared.data.synthetic_abnormal import SyntheticAbnormal, read_synthetic_abnormal
from twinray.shared.data.twin_residuals import read_twin_residuals
from twinray.shared.models.detection.network import DetectorConfig, detector_inputs
from twinray.shared.models.segmentation.network import segmenter_from_weights
from twinray.shared.platform.imaging import unit_images
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import ArtifactStore
from twinray.shared.platform.telemetry import keep_patient_data_out_of_logs
from twinray.shared.synthesis.synthetic_abnormal import anatomy_maps
from twinray.training.config import TrainConfig

SEGMENTER_NAME = "segmentation"
NEEDS_RESIDUALS = ("concat", "attention")
RSNA = "rsna"  # the dataset name that reads the RSNA download at `root` instead of the store
RSNA_CHUNK = 64  # RSNA images decoded (in DataLoader worker processes) and labelled at a time


@dataclasses.dataclass(frozen=True)
class DetectionTrainConfig(TrainConfig):
    dataset: str = "cxr-phantoms-v2"
    root: str = ""  # the RSNA download folder (dataset "rsna" only); absolute, so every Ray worker finds it
    residuals: str = ""  # the twin-residual dataset the concat and attention variants read
    synthetic: str = ""  # a synthetic abnormal dataset made from `dataset` (and, for residual variants, the same twin)
    synthetic_count: int = 0  # how many of its first images join the training split (0: none)
    segmentation_version: int | str = "latest"  # the anatomy variant's segmenter, resolved before Ray starts
    epochs: int = 12
    batch_size: int = 8
    learning_rate: float = 1e-3
    seed: int = 0
    workers: int = 1
    use_gpu: bool = False
    model: DetectorConfig = DetectorConfig()


@dataclasses.dataclass(frozen=True)
class DetectionSplit:
    """One split as the detector reads it: images (N,1,S,S) (float in [0, 1], or uint8 = 255 x that),
    residuals (N,1,S,S) or anatomy (N,S,S) when the variant reads them, and one target dict per image
    (boxes xyxy px, labels = PATHOLOGIES index)."""

    image: torch.Tensor
    residual: torch.Tensor | None
    anatomy: torch.Tensor | None
    targets: list[dict[str, torch.Tensor]]

    def inputs(self, config: DetectorConfig, rows: torch.Tensor) -> torch.Tensor:
        image = self.image[rows]
        if image.dtype == torch.uint8:
            image = image.float() / 255
        residual = None if self.residual is None else self.residual[rows]
        anatomy = None if self.anatomy is None else self.anatomy[rows]
        return detector_inputs(config, image, residual, anatomy)


def targets_of(arrays: PhantomArrays | SyntheticAbnormal) -> list[dict[str, torch.Tensor]]:
    """Each image's true boxes and pathology labels, as torchvision's detectors take them."""
    return [
        {
            "boxes": torch.from_numpy(arrays.boxes_of(i).copy()).float(),
            "labels": torch.from_numpy(arrays.lesion_classes[i, : arrays.box_count[i]].astype("int64")),
        }
        for i in range(len(arrays))
    ]


def detection_split(
    store: ArtifactStore, config: DetectionTrainConfig, split: str, segmenter: torch.nn.Module | None
) -> DetectionSplit:
    """`split` of the config's dataset with what its variant reads; the training split is followed by
    the first `synthetic_count` synthetic abnormal images."""
    if config.dataset == RSNA:
        return _rsna_split(config, split, segmenter)
    needs_residuals = config.model.variant in NEEDS_RESIDUALS
    arrays = read_phantom_split(store, config.dataset, split)
    parts = [(arrays, read_twin_residuals(store, config.residuals, split) if needs_residuals else None)]
    if split == "train" and config.synthetic_count:
        synthetic = read_synthetic_abnormal(store, config.synthetic, config.synthetic_count)
        parts.append((synthetic, synthetic.residual))
    image = unit_images(np.concatenate([part.image for part, _ in parts]))
    residual = torch.from_numpy(np.concatenate([r for _, r in parts]))[:, None] if needs_residuals else None
    anatomy = None
    if config.model.variant == "anatomy":
        anatomy = anatomy_maps(segmenter, image, torch.device("cpu")).to(torch.uint8)
    return DetectionSplit(image, residual, anatomy, [target for part, _ in parts for target in targets_of(part)])


def _rsna_split(config: DetectionTrainConfig, split: str, segmenter: torch.nn.Module | None) -> DetectionSplit:
    """`split` of the RSNA download at `config.root`, each DICOM decoded to [0, 1] and stretched to the
    detector's input size S with its boxes, stored as uint8 (N x S x S bytes: 26,684 images at S = 256
    are 1.75 GB) with the anatomy maps of the float image when the variant reads them. DICOMs are decoded
    by as many processes as torch has threads (the Ray worker's CPUs): about 40 ms each at 1024 px."""
    keep_patient_data_out_of_logs()  # the Ray Train worker decodes real DICOMs: pydicom would quote their headers
    size = config.model.input_size
    dataset = rsna_split(config.root, split, size)
    image = torch.empty((len(dataset), 1, size, size), dtype=torch.uint8)
    anatomy = torch.empty((len(dataset), size, size), dtype=torch.uint8) if config.model.variant == "anatomy" else None
    targets: list[dict[str, torch.Tensor]] = []
    chunks = DataLoader(dataset, batch_size=RSNA_CHUNK, num_workers=torch.get_num_threads(), collate_fn=list)
    with tqdm(total=len(dataset), desc=f"RSNA {split} images", unit="image", mininterval=10) as progress:
        for items in chunks:
            rows = slice(len(targets), len(targets) + len(items))
            unit = torch.from_numpy(np.stack([item.image for item in items]))[:, None]
            image[rows] = (unit * 255).round().to(torch.uint8)
            if anatomy is not None:
                anatomy[rows] = anatomy_maps(segmenter, unit, torch.device("cpu")).to(torch.uint8)
            targets += [
                {"boxes": torch.from_numpy(item.boxes), "labels": torch.full((len(item.boxes),), OPACITY, dtype=torch.int64)}
                for item in items
            ]
            progress.update(len(items))
    return DetectionSplit(image, None, anatomy, targets)


def load_segmenter(store: ArtifactStore, config: DetectionTrainConfig) -> torch.nn.Module | None:
    """The anatomy variant's segmenter (None for the other variants)."""
    if config.model.variant != "anatomy":
        return None
    loaded = ModelRegistry(store).load(SEGMENTER_NAME, config.segmentation_version)
    return segmenter_from_weights(loaded.config, loaded.weights).eval()


def detection_config(variant: str = "baseline", **fields: Any) -> DetectionTrainConfig:
    """The training config of `fields`, its detector of `variant`."""
    model = fields.pop("model", DetectorConfig())
    return DetectionTrainConfig(**fields, model=dataclasses.replace(model, variant=variant))

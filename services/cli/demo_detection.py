"""The demo's detection half: the attention detector, whose pyramid the healthy twin's residual gates,
trained on Ray Train and asked over gRPC (Detection -> NormalSynthesis -> Segmentation) for one held-out
phantom of each pathology class. Its figures put the boxes it found beside the true ones, with the
residual it read and its attention per pyramid level.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import torch
from torchvision.ops import box_iou

from twinray.services.cli.phantom_image import phantom_image
from twinray.services.detection.client import detect
from twinray.shared.data.phantoms.dataset import read_phantom_split
from twinray.shared.evaluation.detection_figures import DetectionCase, attention_figure, detection_figure
from twinray.shared.evaluation.normal_synthesis import one_case_per_pathology
from twinray.shared.models.detection.network import DetectorConfig, detector_from_weights, detector_inputs
from twinray.shared.platform.config import Settings
from twinray.shared.platform.imaging import decode_png
from twinray.shared.platform.imaging.unit_range import to_unit
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import ArtifactStore
from twinray.shared.synthesis.twin_residuals import GENERATOR, write_twin_residuals
from twinray.training.detection import MODEL_NAME as DETECTOR
from twinray.training.detection import detection_config, train_detection
from twinray.v1 import detection_pb2

# A quarter of the default pyramid width, so that the demo trains it in minutes on 2 CPU cores; the
# ablation (`twinray eval detection`) trains every variant at full width.
DEMO_DETECTOR = DetectorConfig(fpn_channels=64)
DEMO_EPOCHS = 6


def train_detector(settings: Settings, store: ArtifactStore, twin_version: int, dataset: str) -> int:
    """The latest published attention detector trained on `dataset`, or one trained now (reading the
    residuals of twin generator `twin_version`, stored once as a dataset) when there is none."""
    registry = ModelRegistry(store)
    version = registry.latest_trained_on(DETECTOR, dataset)
    if version is not None and json.loads(registry.read_file(DETECTOR, version, "config.json"))["variant"] == "attention":
        print(f"      reusing published {DETECTOR} v{version} (delete {store.uri('models/' + DETECTOR)} to retrain)")
        return version
    residuals = write_twin_residuals(store, model=GENERATOR, model_version=twin_version, dataset=dataset)
    print(
        f"      twin residuals {residuals['name']!r}: { ({split: entry['count'] for split, entry in residuals['splits'].items()}) }"
    )
    config = detection_config("attention", dataset=dataset, residuals=residuals["name"], epochs=DEMO_EPOCHS, model=DEMO_DETECTOR)
    version = train_detection(settings, config).version
    print(f"      published {DETECTOR} v{version} in {store.uri(f'models/{DETECTOR}/{version}')}")
    return version


def _case(
    response: detection_pb2.DetectResponse, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, title: str
) -> DetectionCase:
    found = response.lesions
    return DetectionCase(
        image=image,
        true_boxes=boxes,
        true_classes=classes,
        pred_boxes=np.array([[x.box.x_min, x.box.y_min, x.box.x_max, x.box.y_max] for x in found], dtype=np.float32).reshape(
            -1, 4
        ),
        pred_scores=np.array([x.box.score for x in found], dtype=np.float32),
        pred_classes=np.array([x.class_index for x in found], dtype=np.int64),
        residual=np.frombuffer(response.residual.data, "<f4").reshape(tuple(response.residual.shape)),
        twin=decode_png(response.twin_png).pixels,
        title=title,
    )


def _best_iou(truth: np.ndarray, found: np.ndarray) -> list[float]:
    """Per true box, its best IoU with any found box (0 when nothing was found)."""
    if not len(found):
        return [0.0] * len(truth)
    return box_iou(torch.from_numpy(truth).float(), torch.from_numpy(found).float()).max(dim=1).values.tolist()


def detection_cases(channel: grpc.Channel, store: ArtifactStore, out_dir: Path, dataset: str, version: int) -> list[Path]:
    """Detect one held-out phantom per pathology over gRPC with attention detector `version` at its own
    (val-chosen) score threshold; print how well each found its lesions; draw `detection.png` (input with true and found
    boxes | residual | twin) and `detection_attention.png` (the served detector's gates per level)."""
    test = read_phantom_split(store, dataset, "test")
    cases = []
    for title, i in one_case_per_pathology(test):
        response = detect(channel, phantom_image(test, i), version=str(version), include_residual=True, include_twin=True)
        truth = test.boxes_of(i)
        case = _case(
            response, to_unit(test.image[i], np.float64), truth, test.lesion_classes[i, : len(truth)], f"{title} (case {i})"
        )
        cases.append(case)
        best = _best_iou(truth, case.pred_boxes)
        print(
            f"      {title} (case {i}): {len(case.pred_boxes)} box(es) at score >= {response.min_score:.2f}; "
            f"best IoU per true box {', '.join(f'{v:.2f}' for v in best)}"
        )
    print("      served by " + ", ".join(f"{m.name} v{m.version}" for m in response.provenance.models))
    figures = [detection_figure(cases, out_dir / "detection.png")]
    loaded = ModelRegistry(store).load(DETECTOR, version)
    detector = detector_from_weights(loaded.config, loaded.weights)
    image = torch.from_numpy(np.stack([case.image for case in cases]).astype(np.float32))[:, None]
    residual = torch.from_numpy(np.stack([case.residual for case in cases]))[:, None]
    figures.append(
        attention_figure(detector, detector_inputs(detector.config, image, residual), out_dir / "detection_attention.png")
    )
    for path in figures:
        store.put_file(f"reports/demo/{path.name}", path, content_type="image/png")
    return figures

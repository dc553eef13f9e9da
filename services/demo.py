"""`make demo`: phantoms -> Ray Train -> registry -> Ray Serve -> gRPC call -> figure and Dice.

Runs on the embedded default (local Ray, local artifact store) in a few minutes on 2 CPU cores, and
reuses the dataset and a published model when they already exist.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import numpy as np
from tqdm import tqdm

from services.client import segment
from services.figures import segmentation_figure
from services.up import deploy
from shared.anatomy import ANATOMY_CLASSES
from shared.config import Settings
from shared.errors import NotFound
from shared.imaging import decode_label_png, encode_float01_png16
from shared.phantoms.dataset import read_phantom_split, write_phantom_dataset
from shared.registry import ModelRegistry
from shared.storage import open_store
from twinray.v1 import common_pb2
from training.segmentation import MODEL_NAME, SegmentationTrainConfig, evaluate_published, train_segmentation
from services.cli import DATASET, SPLITS

DEMO_CASES = 4


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    scores = []
    for index in range(1, len(ANATOMY_CLASSES)):
        p, t = pred == index, truth == index
        if p.any() or t.any():
            scores.append(2 * np.logical_and(p, t).sum() / (p.sum() + t.sum()))
    return float(np.mean(scores))


def run_demo(settings: Settings) -> None:
    store = open_store(settings)
    registry = ModelRegistry(store)
    print(f"[1/5] phantom dataset {DATASET!r} in {store.uri('datasets/' + DATASET)}", flush=True)
    write_phantom_dataset(store, DATASET, size=256, splits=SPLITS, seed=0)

    try:
        version = registry.latest(MODEL_NAME)
        print(f"[2/5] reusing published {MODEL_NAME} v{version} (delete {store.uri('models/' + MODEL_NAME)} to retrain)")
    except NotFound:
        print("[2/5] training the anatomy segmenter with Ray Train (1 worker, all CPUs)", flush=True)
        version = train_segmentation(settings, SegmentationTrainConfig(dataset=DATASET)).version
        print(f"      published {MODEL_NAME} v{version} in {store.uri(f'models/{MODEL_NAME}/{version}')}")

    print(f"[3/5] starting Ray Serve with gRPC ingress on port {settings.grpc_port}", flush=True)
    deploy(settings, only=["segmentation"])

    print(f"[4/5] calling Segmentation/Segment over gRPC on {DEMO_CASES} held-out phantoms", flush=True)
    test = read_phantom_split(store, DATASET, "test")
    out_dir = settings.home / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = []
    with grpc.insecure_channel(f"localhost:{settings.grpc_port}") as channel:
        for i in tqdm(range(DEMO_CASES), desc="gRPC Segment", unit="image"):
            image = test.image[i] / 65535.0
            spacing = common_pb2.PixelSpacing(row_mm=test.spacing_mm, col_mm=test.spacing_mm)
            request_image = common_pb2.Image(png=encode_float01_png16(image), spacing=spacing)
            response = segment(channel, request_image)
            pred = decode_label_png(response.label_map.png)
            cases.append((image, test.anatomy[i], pred, _dice(pred, test.anatomy[i])))
    figure = segmentation_figure(cases, out_dir / "segmentation.png")
    store.put_file("reports/demo/segmentation.png", figure, content_type="image/png")
    served = response.provenance.models[0]
    lung = {a.name: a.area_mm2 for a in response.areas}
    print(f"      served by {served.name} v{served.version}; case Dice " + ", ".join(f"{c[3]:.3f}" for c in cases))
    print(f"      last case lung areas: right {lung['lung_right'] / 100:.1f} cm^2, left {lung['lung_left'] / 100:.1f} cm^2")

    print("[5/5] evaluating on the whole held-out test split", flush=True)
    report = evaluate_published(settings, version=str(version), dataset=DATASET)
    print(f"      mean Dice {report['mean_dice']:.4f} over {report['images']} images: {report['per_class']}")
    print("\nartifacts:")
    print(f"  dataset   {store.uri(f'datasets/{DATASET}/manifest.json')}")
    print(f"  model     {store.uri(f'models/{MODEL_NAME}/{version}/manifest.json')}")
    print(f"  checkpts  {store.uri('checkpoints')}")
    print(f"  figure    {figure}  (also {store.uri('reports/demo/segmentation.png')})")

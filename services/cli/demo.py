"""`make demo`: phantoms -> Ray Train (segmenter, matching-pairs translator, anatomy-conditioned twin
generator, residual-attention detector: services/cli/demo_detection.py) -> registry -> Ray Serve ->
gRPC calls -> figures and held-out scores; then the factory half (services/cli/demo_defects.py):
product surfaces -> the two defect generators -> defect galleries.

Runs on the embedded default (local Ray, local artifact store) in minutes on 2 CPU cores, and reuses
the dataset, the pseudo-pairs and every published model that already exists.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
from tqdm import tqdm

from twinray.services.cli.defaults import DATASET, PHANTOM_GENERATOR, SPLITS
from twinray.services.cli.demo_defects import REAL_DEFECTS, defect_galleries, train_defect_models
from twinray.services.cli.demo_detection import DETECTOR, detection_cases, train_detector
from twinray.services.cli.figures import segmentation_figure, twin_figure
from twinray.services.cli.phantom_image import phantom_image
from twinray.services.cli.reports import print_segmentation_report, print_twin_report
from twinray.services.cli.up import deploy
from twinray.services.normal_synthesis.client import synthesize
from twinray.services.segmentation.client import segment
from twinray.shared.data.anatomy import ANATOMY_CLASSES
from twinray.shared.data.phantoms.dataset import PhantomArrays, read_phantom_split, write_phantom_dataset
from twinray.shared.evaluation.normal_synthesis import evaluate_published as evaluate_normal_synthesis
from twinray.shared.evaluation.normal_synthesis import one_case_per_pathology
from twinray.shared.evaluation.segmentation import evaluate_published as evaluate_segmentation
from twinray.shared.platform.config import Settings
from twinray.shared.platform.imaging import decode_label_png, decode_png
from twinray.shared.platform.imaging.unit_range import to_unit
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import ArtifactStore, open_store
from twinray.shared.synthesis.pseudo_pairs import write_pseudo_pairs
from twinray.training import matching_pairs, normal_synthesis, segmentation

DEMO_CASES = 4
STEPS = 12


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    scores = []
    for index in range(1, len(ANATOMY_CLASSES)):
        p, t = pred == index, truth == index
        if p.any() or t.any():
            scores.append(2 * np.logical_and(p, t).sum() / (p.sum() + t.sum()))
    return float(np.mean(scores))


def _step(number: int, text: str) -> None:
    print(f"[{number}/{STEPS}] {text}", flush=True)


def _published_or_trained(registry: ModelRegistry, name: str, dataset: str, train: Callable[[], int]) -> int:
    """The latest published version of `name` trained on `dataset`, or a freshly trained one when there
    is none (a store from an earlier release keeps its models; the demo does not reuse them on new data)."""
    version = registry.latest_trained_on(name, dataset)
    if version is not None:
        print(f"      reusing published {name} v{version} (delete {registry.store.uri('models/' + name)} to retrain)")
        return version
    version = train()
    print(f"      published {name} v{version} in {registry.store.uri(f'models/{name}/{version}')}")
    return version


def _segmentation_cases(channel: grpc.Channel, test: PhantomArrays, out_dir: Path, store: ArtifactStore) -> Path:
    cases = []
    for i in tqdm(range(DEMO_CASES), desc="gRPC Segment", unit="image"):
        response = segment(channel, phantom_image(test, i))
        pred = decode_label_png(response.label_map.png)
        cases.append((to_unit(test.image[i], np.float64), test.anatomy[i], pred, _dice(pred, test.anatomy[i])))
    served = response.provenance.models[0]
    lung = {a.name: a.area_mm2 for a in response.areas}
    print(f"      served by {served.name} v{served.version}; case Dice " + ", ".join(f"{c[3]:.3f}" for c in cases))
    print(f"      last case lung areas: right {lung['lung_right'] / 100:.1f} cm^2, left {lung['lung_left'] / 100:.1f} cm^2")
    figure = segmentation_figure(cases, out_dir / "segmentation.png")
    store.put_file("reports/demo/segmentation.png", figure, content_type="image/png")
    return figure


def _twin_cases(channel: grpc.Channel, test: PhantomArrays, out_dir: Path, store: ArtifactStore) -> Path:
    cases = []
    for title, i in tqdm(one_case_per_pathology(test), desc="gRPC Synthesize", unit="image"):
        response = synthesize(channel, phantom_image(test, i))
        residual = np.frombuffer(response.residual.data, "<f4").reshape(tuple(response.residual.shape))
        mask = test.lesion_mask[i]
        energy = np.square(residual)
        cases.append(
            {
                "title": title,
                "image": to_unit(test.image[i], np.float64),
                "anatomy": decode_label_png(response.anatomy.png),
                "twin": decode_png(response.twin_png).pixels,
                "residual": residual,
                "lesion_mask": mask,
            }
        )
        print(
            f"      {title} (case {i}): {energy[mask].sum() / max(energy.sum(), 1e-12):.2f} of the residual energy inside the true lesion"
        )
    used = ", ".join(f"{m.name} v{m.version}" for m in response.provenance.models)
    print(f"      served by {used}")
    figure = twin_figure(cases, out_dir / "healthy_twin.png")
    store.put_file("reports/demo/healthy_twin.png", figure, content_type="image/png")
    return figure


def run_demo(settings: Settings) -> None:
    store = open_store(settings)
    registry = ModelRegistry(store)
    _step(1, f"phantom dataset {DATASET!r} in {store.uri('datasets/' + DATASET)}")
    write_phantom_dataset(store, DATASET, size=256, splits=SPLITS, seed=0, generator=PHANTOM_GENERATOR)

    _step(2, "anatomy segmenter (Ray Train, 1 worker, all free CPUs)")
    seg_version = _published_or_trained(
        registry,
        segmentation.MODEL_NAME,
        DATASET,
        lambda: segmentation.train_segmentation(settings, segmentation.SegmentationTrainConfig(dataset=DATASET)).version,
    )
    _step(3, "matching-pair translator: unpaired CycleGAN with a disease critic (Ray Train)")
    translator_version = _published_or_trained(
        registry,
        matching_pairs.MODEL_NAME,
        DATASET,
        lambda: matching_pairs.train_matching_pairs(settings, matching_pairs.MatchingPairsTrainConfig(dataset=DATASET)).version,
    )
    pairs = write_pseudo_pairs(store, model_version=translator_version, dataset=DATASET)
    print(f"      pseudo-pairs {pairs['name']!r}: {pairs['counts']}")
    _step(4, "anatomy-conditioned twin generator (SPADE) on the pseudo-pairs and generic lesions (Ray Train)")
    twin_version = _published_or_trained(
        registry,
        normal_synthesis.MODEL_NAME,
        DATASET,
        lambda: normal_synthesis.train_normal_synthesis(
            settings,
            normal_synthesis.NormalSynthesisTrainConfig(
                pseudo_pairs=pairs["name"], dataset=DATASET, segmentation_version=str(seg_version)
            ),
        ).version,
    )

    _step(5, "residual-saliency detector: RetinaNet whose pyramid the twin residual gates (Ray Train)")
    detector_version = train_detector(settings, store, twin_version, DATASET)
    _step(6, f"product surfaces with {REAL_DEFECTS} real defects: mask DDPM, normal-manifold DDPM, defect encoder (Ray Train)")
    defect_versions = train_defect_models(settings, store, _published_or_trained)

    _step(7, f"starting Ray Serve with gRPC ingress on port {settings.grpc_port}")
    deploy(settings)
    test = read_phantom_split(store, DATASET, "test")
    out_dir = settings.home / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    with grpc.insecure_channel(f"localhost:{settings.grpc_port}") as channel:
        _step(8, f"Segmentation/Segment over gRPC on {DEMO_CASES} held-out phantoms")
        seg_figure = _segmentation_cases(channel, test, out_dir, store)
        _step(9, "NormalSynthesis/Synthesize over gRPC on a held-out phantom of each pathology class")
        twin_figure_path = _twin_cases(channel, test, out_dir, store)
        _step(
            10,
            "Detection/Detect over gRPC (composing NormalSynthesis and Segmentation) on a held-out phantom of each pathology class",
        )
        detection_figures = detection_cases(channel, store, out_dir, DATASET, detector_version)
        _step(11, "DefectGeneration/Synthesize over gRPC, mask_blend and conditioned_ddpm, on held-out normal parts")
        defect_figures = defect_galleries(channel, store, out_dir)

    _step(12, "evaluating on the whole held-out test split")
    print_segmentation_report(evaluate_segmentation(settings, version=str(seg_version), dataset=DATASET))
    print_twin_report(evaluate_normal_synthesis(settings, version=str(twin_version), dataset=DATASET))
    print("\nartifacts:")
    print(f"  dataset   {store.uri(f'datasets/{DATASET}/manifest.json')}")
    for name, version in (
        (segmentation.MODEL_NAME, seg_version),
        (matching_pairs.MODEL_NAME, translator_version),
        (normal_synthesis.MODEL_NAME, twin_version),
        (DETECTOR, detector_version),
        *defect_versions.items(),
    ):
        print(f"  model     {store.uri(f'models/{name}/{version}/manifest.json')}")
    print(f"  checkpts  {store.uri('checkpoints')}")
    figures = ", ".join(str(path) for path in (seg_figure, twin_figure_path, *detection_figures, *defect_figures))
    print(f"  figures   {figures}  (also in {store.uri('reports/demo')})")
    print("\ndoes synthetic data help a defect segmenter? `twinray eval defect-augmentation` (k = 5 and 20 real defects)")

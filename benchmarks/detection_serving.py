"""Detection serving cost: Detect end to end (the service asks NormalSynthesis for the residual, which
asks Segmentation for the anatomy) over gRPC through Ray Serve, its detector forward batched
(`max_batch_size` 8) and unbatched (1), versus the same pipeline in-process (the three servicers
called directly in this process: no Serve, no gRPC, one image per detector forward).

Every path decodes the same 256x256 16-bit PNG phantom (with lesions) and runs the same published
models: the attention detector (DetectorConfig defaults), the generator and the segmenter as
benchmarks/normal_synthesis_serving.py publishes them, all untrained (speed does not depend on the
weights). The detector is published as `twinray train detection` publishes one: its training.json
names the twin-residual dataset (written here, by that generator, from a one-image phantom dataset)
and the generator that made it, which the service checks before answering. Run: `make benchmark` or
`.venv/bin/python -m benchmarks.detection_serving [--requests 96] [--quick] [--no-service]`. Writes
benchmarks/reports/detection_serving.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.common import latency_ratios, publish_twin_models, publish_untrained, run_load, scratch_settings
from benchmarks.report import machine, write_report
from twinray.services import SERVE_CONFIG
from twinray.services.detection.servicer import DetectionServicer
from twinray.services.normal_synthesis.servicer import NormalSynthesisServicer
from twinray.services.segmentation.servicer import SegmentationServicer
from twinray.shared.data.phantoms.cxr import render_phantom
from twinray.shared.data.phantoms.dataset import write_phantom_dataset
from twinray.shared.models.detection.network import DetectorConfig, LesionDetector
from twinray.shared.platform.config import Settings
from twinray.shared.platform.imaging import encode_float01_png16
from twinray.shared.platform.registry import ModelRegistry, ModelVersion
from twinray.shared.platform.storage import open_store
from twinray.shared.synthesis.twin_residuals import GENERATOR, write_twin_residuals
from twinray.v1 import common_pb2, detection_pb2, normal_synthesis_pb2, segmentation_pb2

DETECTION = "detection"  # model and Serve application
APPS = ["segmentation", "normal-synthesis", DETECTION]
CONCURRENCY = (1, 8)
BATCH_SIZES = (8, 1)  # the Detection deployment's max_batch_size: batched, unbatched
PHANTOMS = "bench-phantoms"  # the phantom dataset the detector's twin residuals were "computed on"
IN_PROCESS = "in-process"
SIZE = 256  # the image, the phantoms and the detector input (DetectorConfig's default)


def grpc_path(max_batch_size: int) -> str:
    return f"grpc+serve/batch{max_batch_size}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=96, help="timed requests per path and concurrency")
    parser.add_argument(
        "--service",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure Detect over Ray Serve gRPC, batched and unbatched (--no-service: in-process only, no Ray)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 8 timed requests per cell")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests = 8
    if args.requests < max(CONCURRENCY):
        parser.error(f"--requests must be at least {max(CONCURRENCY)} (one per thread at concurrency {max(CONCURRENCY)})")
    return args


def publish_models(settings: Settings) -> dict[str, ModelVersion]:
    """Segmenter, generator and an attention detector whose training.json records its twin residuals
    exactly as the detection trainer writes it (dataset name and the generator's identity, weights sha256
    included), so the service accepts it as it would a trained one."""
    segmentation, synthesis = publish_twin_models(settings)
    store = open_store(settings)
    write_phantom_dataset(store, PHANTOMS, size=SIZE, splits={"train": 1}, seed=0, progress=False)
    residuals = write_twin_residuals(store, model=GENERATOR, model_version=synthesis.version, dataset=PHANTOMS, progress=False)
    config = DetectorConfig(variant="attention", input_size=SIZE)
    training = {"twin_residuals": {"name": residuals["name"], "model": residuals["model"]}}
    detection = publish_untrained(settings, DETECTION, LesionDetector(config), config.to_dict(), training)
    return {DETECTION: detection, GENERATOR: synthesis, "segmentation": segmentation}


def in_process_detect(settings: Settings) -> Callable[[detection_pb2.DetectRequest], detection_pb2.DetectResponse]:
    """Detect through the three servicers in this process, each calling the next as the deployments do."""
    segmentation, synthesis, detection = (
        SegmentationServicer(settings),
        NormalSynthesisServicer(settings),
        DetectionServicer(settings),
    )

    async def segment(request: segmentation_pb2.SegmentRequest) -> segmentation_pb2.SegmentResponse:
        return segmentation.segment(request)

    async def synthesize(request: normal_synthesis_pb2.SynthesizeRequest) -> normal_synthesis_pb2.SynthesizeResponse:
        return await synthesis.synthesize(request, (), segment)

    return lambda request: asyncio.run(detection.detect(request, (), synthesize=synthesize, segment=segment))


def detection_app(config: dict[str, Any]) -> dict[str, Any]:
    """The Detection application's entry in a Serve config."""
    (app,) = [app for app in config["applications"] if app["name"] == DETECTION]
    return app


def serve_config(settings: Settings, max_batch_size: int) -> Path:
    """The project's Serve config with only the Detection app's `max_batch_size` changed, in the scratch home."""
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    detection_app(config)["args"]["max_batch_size"] = max_batch_size
    path = settings.home / f"serve_config_batch{max_batch_size}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def check_answer(path: str, answer: detection_pb2.DetectResponse, models: dict[str, ModelVersion]) -> None:
    """The answer went through all three models (those published here) and is on the image's grid."""
    expected = [(name, str(model.version)) for name, model in models.items()]
    answered = [(m.name, m.version) for m in answer.provenance.models]
    assert answered == expected, f"{path}: provenance {answered}, expected {expected}"
    assert (answer.height, answer.width) == (SIZE, SIZE), f"{path}: answer on a {answer.height}x{answer.width} grid"


def serving_ratios(results: dict[str, dict[str, float]]) -> dict[str, Any]:
    """gRPC (batched, unbatched) over in-process, and batched over unbatched, at each concurrency;
    empty when only the in-process path ran."""
    if f"{grpc_path(BATCH_SIZES[0])}@{CONCURRENCY[0]}" not in results:
        return {}
    batched, unbatched = (grpc_path(size) for size in BATCH_SIZES)
    return {
        "grpc_over_inprocess": {
            f"batch_{size}": {
                f"concurrency_{c}": latency_ratios(results[f"{grpc_path(size)}@{c}"], results[f"{IN_PROCESS}@{c}"])
                for c in CONCURRENCY
            }
            for size in BATCH_SIZES
        },
        "batched_over_unbatched": {
            f"concurrency_{c}": latency_ratios(results[f"{batched}@{c}"], results[f"{unbatched}@{c}"]) for c in CONCURRENCY
        },
    }


def ratio_notes(ratios: dict[str, Any], settings: dict[str, Any]) -> str:
    """The markdown under the results table: what the numbers are (and are not), and the ratios."""
    load = settings["load_average_1m"]
    notes = (
        "Serving cost only: every network is untrained (real architectures at realistic sizes), so the "
        "detector's boxes mean nothing; an untrained head scores every anchor about 0.01, under its 0.05 "
        "threshold, so box post-processing (NMS) is cheaper than a trained detector's. Measured in this order: "
        "in-process (before Ray starts), gRPC batched, gRPC unbatched (the Detection app redeployed). "
        f"In-process: {settings['in_process_torch_threads']} torch thread(s), one image per detector forward; "
        "each Serve replica (0.5 CPU) runs 1 (Ray's OMP_NUM_THREADS). "
        f"{settings['cpu_cores']} CPU cores, which other jobs may share (1-minute load average {load[0]} before, {load[1]} after)."
    )
    if not ratios:
        return notes + " In-process only (--no-service): no ratios."
    labelled = [
        (f"gRPC+Serve (max_batch_size {size.removeprefix('batch_')}) / in-process", by_concurrency)
        for size, by_concurrency in ratios["grpc_over_inprocess"].items()
    ]
    labelled.append(
        (f"batched / unbatched (max_batch_size {BATCH_SIZES[0]} / {BATCH_SIZES[1]}, gRPC)", ratios["batched_over_unbatched"])
    )
    lines = ["| ratio | concurrency | p50 | p95 | throughput |", "|---|---|---|---|---|"]
    for label, by_concurrency in labelled:
        for c, r in by_concurrency.items():
            lines.append(f"| {label} | {c.removeprefix('concurrency_')} | x{r['p50']} | x{r['p95']} | x{r['throughput']} |")
    return notes + "\n\nRatios (latency: higher is slower; throughput: lower is slower):\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure, write the report, return it."""
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    settings = scratch_settings()
    models = publish_models(settings)
    image = common_pb2.Image(png=encode_float01_png16(render_phantom(1, SIZE, lesion_seed=1).image))
    request = detection_pb2.DetectRequest(image=image)
    detect_in_process = in_process_detect(settings)
    check_answer(IN_PROCESS, detect_in_process(request), models)

    results: dict[str, dict[str, float]] = {}
    rows: list[dict[str, Any]] = []

    def measure(path: str, call: Callable[[], Any], max_batch_size: int | str) -> None:
        for concurrency in CONCURRENCY:
            results[f"{path}@{concurrency}"] = stats = run_load(call, args.requests, concurrency)
            rows.append({"path": path.split("/")[0], "max_batch_size": max_batch_size, "concurrency": concurrency, **stats})
            print(rows[-1], flush=True)

    measure(IN_PROCESS, lambda: detect_in_process(request), "- (one image a forward)")
    if args.service:
        import grpc
        from ray import serve

        from twinray.services.cli.up import deploy
        from twinray.services.detection.client import detect

        for max_batch_size in BATCH_SIZES:
            if max_batch_size != BATCH_SIZES[0]:
                # A redeploy with new args reports RUNNING until the controller acts on it; an app deleted first cannot.
                serve.delete(DETECTION)
            deploy(settings, serve_config(settings, max_batch_size), only=APPS)
            channel = grpc.insecure_channel(f"127.0.0.1:{settings.grpc_port}")
            check_answer(grpc_path(max_batch_size), detect(channel, image), models)
            measure(grpc_path(max_batch_size), lambda: detect(channel, image), max_batch_size)  # noqa: B023 - called here
    ratios = serving_ratios(results)
    registry = ModelRegistry(open_store(settings))
    report_settings = {
        "requests_per_cell": args.requests,
        "concurrency": list(CONCURRENCY),
        "max_batch_size": list(BATCH_SIZES) if args.service else [],
        "batch_wait_timeout_s": detection_app(yaml.safe_load(SERVE_CONFIG.read_text()))["args"]["batch_wait_timeout_s"],
        "replicas": {"Detection": 1, "NormalSynthesis": 1, "Segmentation": 1},
        "cpu_cores": os.cpu_count(),
        "in_process_torch_threads": torch.get_num_threads(),
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "quick": args.quick,
    }
    report = {
        "benchmark": "detection_serving",
        "weights": "untrained (serving cost, not accuracy)",
        "image": f"{SIZE}x{SIZE} 16-bit PNG phantom (person 1, lesion seed 1)",
        "model": {
            name: {"version": model.version, "config": json.loads(registry.read_file(name, model.version, "config.json"))}
            for name, model in models.items()
        },
        "settings": report_settings,
        "machine": machine(),
        "results": results,
        "ratios": ratios,
    }
    notes = ratio_notes(ratios, report_settings)
    print(write_report("detection_serving", report, rows, notes))
    print(notes)
    return report


if __name__ == "__main__":
    main()

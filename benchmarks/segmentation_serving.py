"""Segmentation serving cost: gRPC through Ray Serve versus the same servicer called in-process.

Both paths decode the same 256x256 16-bit PNG, run the same published module and encode the same
answer; the ratio is what the gRPC ingress, the proxy hop and Serve's routing add. Run:
`make benchmark` or `.venv/bin/python -m benchmarks.segmentation_serving [--requests 160]`. Writes
benchmarks/reports/segmentation_serving.{json,md}.
"""

from __future__ import annotations

import argparse

import grpc

from benchmarks.common import publish_untrained, run_load, scratch_settings
from benchmarks.report import machine, write_report
from twinray.services.cli.up import deploy
from twinray.services.segmentation.client import segment
from twinray.services.segmentation.servicer import MODEL_NAME, SegmentationServicer
from twinray.shared.data.phantoms.cxr import render_phantom
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig
from twinray.shared.platform.imaging import encode_float01_png16
from twinray.v1 import common_pb2, segmentation_pb2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=160)
    args = parser.parse_args()
    settings = scratch_settings()
    # Speed does not depend on the weights: publish the demo architecture, untrained, in a scratch store.
    config = SegmenterConfig(input_size=256)
    publish_untrained(settings, MODEL_NAME, AnatomySegmenter(config), config.to_dict())
    image = common_pb2.Image(png=encode_float01_png16(render_phantom(1, 256).image))
    request = segmentation_pb2.SegmentRequest(image=image)

    servicer = SegmentationServicer(settings)
    deploy(settings, only=["segmentation"])
    channel = grpc.insecure_channel(f"127.0.0.1:{settings.grpc_port}")
    paths = {"in-process": lambda: servicer.segment(request), "grpc+serve": lambda: segment(channel, image)}

    rows, results = [], {}
    for concurrency in (1, 8):
        for path, call in paths.items():
            stats = run_load(call, args.requests, concurrency)
            results[f"{path}@{concurrency}"] = stats
            rows.append({"path": path, "concurrency": concurrency, **stats})
            print(rows[-1], flush=True)
    ratios = {
        f"concurrency_{c}": {
            "p50_grpc_over_inprocess": round(results[f"grpc+serve@{c}"]["p50_ms"] / results[f"in-process@{c}"]["p50_ms"], 3),
            "throughput_grpc_over_inprocess": round(
                results[f"grpc+serve@{c}"]["throughput_rps"] / results[f"in-process@{c}"]["throughput_rps"], 3
            ),
        }
        for c in (1, 8)
    }
    report = {
        "benchmark": "segmentation_serving",
        "image": "256x256 16-bit PNG phantom",
        "model": {"architecture": config.to_dict(), "replicas": 1},
        "machine": machine(),
        "results": results,
        "ratios": ratios,
    }
    notes = "Ratios (gRPC through Ray Serve / in-process): " + "; ".join(
        f"{k}: p50 x{v['p50_grpc_over_inprocess']}, throughput x{v['throughput_grpc_over_inprocess']}" for k, v in ratios.items()
    )
    print(write_report("segmentation_serving", report, rows, notes))
    print(notes)


if __name__ == "__main__":
    main()

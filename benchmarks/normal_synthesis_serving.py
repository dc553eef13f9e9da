"""Normal-synthesis serving cost: gRPC through Ray Serve versus the same servicer in-process, and the
composed call (the service asks the Segmentation application for the anatomy map) versus synthesis
alone (the request carries the anatomy map).

Every path decodes the same 256x256 16-bit PNG phantom (with lesions), runs the same published
generator and encodes the same answer. In-process composed = NormalSynthesisServicer with an
in-process SegmentationServicer as its `segment`; over gRPC the NormalSynthesis replica reaches the
Segmentation replica through a Serve deployment handle. Run: `make benchmark` or
`.venv/bin/python -m benchmarks.normal_synthesis_serving [--requests 160]`. Writes
benchmarks/reports/normal_synthesis_serving.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio

import grpc

from benchmarks.common import publish_untrained, run_load, scratch_settings
from benchmarks.report import machine, write_report
from twinray.services.cli.up import deploy
from twinray.services.common.messages import anatomy_label_map
from twinray.services.normal_synthesis.client import synthesize
from twinray.services.normal_synthesis.servicer import MODEL_NAME, NormalSynthesisServicer
from twinray.services.segmentation.servicer import MODEL_NAME as SEGMENTATION_NAME
from twinray.services.segmentation.servicer import SegmentationServicer
from twinray.shared.data.phantoms.cxr import render_phantom
from twinray.shared.models.normal_synthesis.network import AnatomyConditionedGenerator, SpadeConfig
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig
from twinray.shared.platform.imaging import encode_float01_png16
from twinray.v1 import common_pb2, normal_synthesis_pb2, segmentation_pb2

APPLICATION = "normal-synthesis"
PATHS = ("in-process", "grpc+serve")
MODES = {"composed": "from Segmentation app", "alone": "in request"}


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=160, help="timed requests per path, mode and concurrency")
    args = parser.parse_args()
    settings = scratch_settings()

    # Speed does not depend on the weights: publish both architectures, untrained, in a scratch store,
    # the generator's config recording the segmentation version it is conditioned on (as training does).
    segmenter_config, spade_config = SegmenterConfig(input_size=256), SpadeConfig()
    segmentation = publish_untrained(settings, SEGMENTATION_NAME, AnatomySegmenter(segmenter_config), segmenter_config.to_dict())
    synthesis_config = {**spade_config.to_dict(), "segmentation_version": segmentation.version}
    synthesis = publish_untrained(settings, MODEL_NAME, AnatomyConditionedGenerator(spade_config), synthesis_config)

    phantom = render_phantom(1, 256, lesion_seed=1)
    image = common_pb2.Image(png=encode_float01_png16(phantom.image))
    anatomy = anatomy_label_map(phantom.anatomy)  # the phantom's true map, as a caller that has one sends it
    requests = {
        "composed": normal_synthesis_pb2.SynthesizeRequest(image=image),
        "alone": normal_synthesis_pb2.SynthesizeRequest(image=image, anatomy=anatomy),
    }

    segmentation_servicer = SegmentationServicer(settings)
    synthesis_servicer = NormalSynthesisServicer(settings)

    async def segment_in_process(request: segmentation_pb2.SegmentRequest) -> segmentation_pb2.SegmentResponse:
        return segmentation_servicer.segment(request)

    deploy(settings, only=["segmentation", APPLICATION])
    channel = grpc.insecure_channel(f"127.0.0.1:{settings.grpc_port}")

    def in_process(request: normal_synthesis_pb2.SynthesizeRequest) -> normal_synthesis_pb2.SynthesizeResponse:
        return asyncio.run(synthesis_servicer.synthesize(request, (), segment_in_process))

    calls = {
        ("in-process", "composed"): lambda: in_process(requests["composed"]),
        ("in-process", "alone"): lambda: in_process(requests["alone"]),
        ("grpc+serve", "composed"): lambda: synthesize(channel, image),
        ("grpc+serve", "alone"): lambda: synthesize(channel, image, anatomy_png=anatomy.png),
    }
    # Both paths answer, and the composed call really went through segmentation.
    expected = {
        "composed": [(MODEL_NAME, str(synthesis.version)), (SEGMENTATION_NAME, str(segmentation.version))],
        "alone": [(MODEL_NAME, str(synthesis.version))],
    }
    for (path, mode), call in calls.items():
        answer = call()
        models = [(m.name, m.version) for m in answer.provenance.models]
        assert models == expected[mode], f"{path}/{mode}: provenance {models}, expected {expected[mode]}"
        assert list(answer.residual.shape) == [256, 256], f"{path}/{mode}: residual shape {list(answer.residual.shape)}"

    rows, results = [], {}
    for concurrency in (1, 8):
        for mode in MODES:
            for path in PATHS:
                stats = run_load(calls[path, mode], args.requests, concurrency)
                results[f"{path}/{mode}@{concurrency}"] = stats
                rows.append({"path": path, "anatomy": MODES[mode], "concurrency": concurrency, **stats})
                print(rows[-1], flush=True)

    def compare(a: str, b: str, c: int) -> dict[str, float]:
        x, y = results[f"{a}@{c}"], results[f"{b}@{c}"]
        return {
            "p50": ratio(x["p50_ms"], y["p50_ms"]),
            "p95": ratio(x["p95_ms"], y["p95_ms"]),
            "throughput": ratio(x["throughput_rps"], y["throughput_rps"]),
        }

    ratios = {
        "grpc_over_inprocess": {
            mode: {f"concurrency_{c}": compare(f"grpc+serve/{mode}", f"in-process/{mode}", c) for c in (1, 8)} for mode in MODES
        },
        "composed_over_alone": {
            path: {f"concurrency_{c}": compare(f"{path}/composed", f"{path}/alone", c) for c in (1, 8)} for path in PATHS
        },
    }
    report = {
        "benchmark": "normal_synthesis_serving",
        "image": "256x256 16-bit PNG phantom (person 1, lesion seed 1)",
        "model": {
            "normal_synthesis": {"version": synthesis.version, "config": synthesis_config},
            "segmentation": {"version": segmentation.version, "config": segmenter_config.to_dict()},
            "replicas": {"NormalSynthesis": 1, "Segmentation": 1},
        },
        "modes": {
            "composed": "no anatomy in the request: synthesis asks the Segmentation service",
            "alone": "the request carries the anatomy map (`anatomy` field)",
        },
        "machine": machine(),
        "results": results,
        "ratios": ratios,
    }
    lines = [
        "| ratio | concurrency | p50 | p95 | throughput |",
        "|---|---|---|---|---|",
    ]
    for kind, groups in ratios.items():
        for group, by_concurrency in groups.items():
            label = {
                "grpc_over_inprocess": f"gRPC+Serve / in-process ({group})",
                "composed_over_alone": f"composed / alone ({group})",
            }[kind]
            for key, r in by_concurrency.items():
                lines.append(f"| {label} | {key.removeprefix('concurrency_')} | x{r['p50']} | x{r['p95']} | x{r['throughput']} |")
    notes = "Ratios (latency: higher is slower; throughput: lower is slower):\n\n" + "\n".join(lines)
    print(write_report("normal_synthesis_serving", report, rows, notes))
    print(notes)


if __name__ == "__main__":
    main()

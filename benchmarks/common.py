"""Shared by the serving benchmarks: a scratch artifact store, untrained models, a load generator, ratios."""

from __future__ import annotations

import atexit
import io
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from benchmarks.report import latency_summary
from twinray.shared.models.normal_synthesis.network import AnatomyConditionedGenerator, SpadeConfig
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig
from twinray.shared.platform.config import Settings
from twinray.shared.platform.registry import ModelRegistry, ModelVersion
from twinray.shared.platform.storage import open_store
from twinray.shared.synthesis.twin_residuals import GENERATOR, SEGMENTER


def scratch_settings() -> Settings:
    """Settings for a fresh temporary TWINRAY_HOME (its own local store, removed at exit) and free
    Serve ports, so a benchmark neither reads real models nor collides with a running `twinray up`
    or test server."""
    home = Path(tempfile.mkdtemp(prefix="twinray-bench-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)  # runs after Ray's own exit hook (registered later)
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    os.environ.update(
        {
            "TWINRAY_HOME": str(home),
            "TWINRAY_GRPC_PORT": str(ports[0]),
            "TWINRAY_HTTP_PORT": str(ports[1]),
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "disabled",
        }
    )
    return Settings.from_env()


def publish_untrained(
    settings: Settings, name: str, model: torch.nn.Module, config: dict[str, Any], training: dict[str, Any] | None = None
) -> ModelVersion:
    """Speed does not depend on the weights: publish `model` as initialised, as the next version of `name`.
    `training` adds the training.json entries a service reads (e.g. the twin model a detector learnt from)."""
    weights = io.BytesIO()
    torch.save(model.state_dict(), weights)
    return ModelRegistry(open_store(settings)).publish(
        name,
        weights=weights.getvalue(),
        config=config,
        metrics={},
        training={"note": "benchmark only", **(training or {})},
        card="Untrained weights of the demo architecture, for latency measurement only.",
    )


def publish_twin_models(settings: Settings) -> tuple[ModelVersion, ModelVersion]:
    """The segmenter (256 px) and the anatomy-conditioned generator (default SpadeConfig), untrained,
    the generator's config recording the segmentation version it is conditioned on (as training does)."""
    segmenter_config, spade_config = SegmenterConfig(input_size=256), SpadeConfig()
    segmentation = publish_untrained(settings, SEGMENTER, AnatomySegmenter(segmenter_config), segmenter_config.to_dict())
    synthesis_config = {**spade_config.to_dict(), "segmentation_version": segmentation.version}
    return segmentation, publish_untrained(settings, GENERATOR, AnatomyConditionedGenerator(spade_config), synthesis_config)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator to 3 significant figures."""
    return float(f"{numerator / denominator:.3g}")


def latency_ratios(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Summaries `a` over `b` (from run_load): latency above 1 = a is slower; throughput below 1 = a is slower."""
    return {
        "p50": ratio(a["p50_ms"], b["p50_ms"]),
        "p95": ratio(a["p95_ms"], b["p95_ms"]),
        "throughput": ratio(a["throughput_rps"], b["throughput_rps"]),
    }


def run_load(call: Callable[[], Any], requests: int, concurrency: int) -> dict[str, float]:
    """`requests` calls spread over `concurrency` threads; per-call latency and overall throughput."""
    for _ in range(3):
        call()  # warm-up: model load, connection set-up
    per_thread = max(1, requests // concurrency)

    def worker(_: int) -> list[float]:
        times = []
        for _ in range(per_thread):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return times

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = [t for chunk in pool.map(worker, range(concurrency)) for t in chunk]
    return latency_summary(latencies, time.perf_counter() - started)

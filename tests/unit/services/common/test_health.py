"""A replica's readiness for grpc.health.v1: its pinned model loaded (started by the first checks,
in the background) and the artifact store answering, on a real store and a real published model."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time

import pytest
import torch

from twinray.services.common.health import Readiness
from twinray.services.common.model_cache import ModelCache
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig, segmenter_from_weights
from twinray.shared.platform.errors import NotFound
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import LocalStore
from twinray.shared.platform.storage.minio_store import MinioStore


def publish_segmenter(registry: ModelRegistry) -> int:
    segmenter = AnatomySegmenter(SegmenterConfig(input_size=32, channels=(4, 8)))
    weights = io.BytesIO()
    torch.save(segmenter.state_dict(), weights)
    config = segmenter.config.to_dict()
    return registry.publish("segmentation", weights=weights.getvalue(), config=config, metrics={}, training={}, card="t").version


async def until_ready(readiness: Readiness, timeout_s: float = 30.0) -> int:
    """How many checks it took until one said ready."""
    deadline = time.monotonic() + timeout_s
    checks = 1
    while not await readiness.check():
        assert time.monotonic() < deadline, "never ready"
        checks += 1
        await asyncio.sleep(0.05)
    return checks


def test_not_ready_until_the_pinned_model_is_published_and_loaded(tmp_path):
    store = LocalStore(tmp_path / "store", "twinray")
    registry = ModelRegistry(store)
    models = ModelCache(registry, "segmentation", segmenter_from_weights)
    readiness = Readiness(store, models.get)

    async def scenario():
        assert not await readiness.check()  # nothing published: NotFound, so not serving
        publish_segmenter(registry)
        await until_ready(readiness)
        assert await readiness.check()  # cached: at once

    asyncio.run(scenario())


def test_a_slow_first_load_goes_on_in_the_background_once(tmp_path):
    calls, release = [], threading.Event()

    def load():
        calls.append(1)
        release.wait(5)

    readiness = Readiness(LocalStore(tmp_path, "twinray"), load, wait_s=0.05)

    async def scenario():
        assert not await readiness.check() and not await readiness.check()
        assert len(calls) == 1  # the second check waited on the same load
        release.set()
        await until_ready(readiness)

    asyncio.run(scenario())


def test_a_failed_load_is_tried_again_on_the_next_check(tmp_path):
    attempts = []

    def load():
        attempts.append(1)
        if len(attempts) == 1:
            raise NotFound("no model 'segmentation' is published")

    readiness = Readiness(LocalStore(tmp_path, "twinray"), load)

    async def scenario():
        assert not await readiness.check()
        assert await readiness.check()

    asyncio.run(scenario())
    assert len(attempts) == 2


@pytest.mark.parametrize("secure", [False, True])
def test_an_unreachable_store_is_not_ready_quickly_and_its_keys_stay_out_of_the_logs(closed_port, caplog, secure):
    store = MinioStore(f"127.0.0.1:{closed_port}", "AKIDLEAKCHECK", "sk-must-not-be-logged", bucket="b", secure=secure)
    readiness = Readiness(store, lambda: None, store_s=5.0)
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    assert not asyncio.run(readiness.check())
    assert time.monotonic() - started < 5.0
    assert "sk-must-not-be-logged" not in caplog.text and "AKIDLEAKCHECK" not in caplog.text

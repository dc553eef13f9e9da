"""What grpc.health.v1 says about one service: SERVING once its replica has its pinned model(s)
loaded and reaches the artifact store.

A replica loads its models on demand (it starts while the store is down or before anything is
published), so a health check starts the load in the background and says NOT_SERVING until it is
done: the first probes warm the replica instead of the first client. Ray-free, like the servicers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from twinray.shared.platform.storage import ArtifactStore

HEALTH_APP = "health"  # the Serve application that answers for every service (services/common/health_app.py)
LIVENESS = "liveness"  # a service name that asks only whether the gRPC ingress itself answers
PROBE_KEY = "models/.health"  # read, never written: any answer (even "absent") means the store answers
log = logging.getLogger("twinray.services.health")


class Readiness:
    """`await check()`: the store answers and `load()` (the pinned model(s), cached after the first
    time) returns within `wait_s`."""

    def __init__(self, store: ArtifactStore, load: Callable[[], object], *, wait_s: float = 0.25, store_s: float = 2.0) -> None:
        self.store = store
        self.load = load
        self.wait_s = wait_s
        self.store_s = store_s
        self._loading: asyncio.Future | None = None
        self._store_answered = True
        self._reason = "not loaded yet"  # why the last load failed ("" = it did not), logged when it changes

    async def check(self) -> bool:
        return await self.store_answers() and await self.model_loaded()

    async def store_answers(self) -> bool:
        try:
            await asyncio.wait_for(asyncio.to_thread(self.store.exists, PROBE_KEY), self.store_s)
        except Exception as error:  # noqa: BLE001 - Unavailable, PermissionDenied, a timeout: not reachable
            if self._store_answered:
                log.warning("artifact store does not answer: %s: %s", type(error).__name__, error)
            self._store_answered = False
            return False
        self._store_answered = True
        return True

    async def model_loaded(self) -> bool:
        """A cached model returns at once; a first load goes on in the background past `wait_s`."""
        if self._loading is None or self._loading.done():
            self._loading = asyncio.ensure_future(asyncio.to_thread(self.load))
            self._loading.add_done_callback(self._log_change)
        try:
            await asyncio.wait_for(asyncio.shield(self._loading), self.wait_s)
        except Exception:  # noqa: BLE001 - still loading, or nothing published / store error: not ready
            return False
        return True

    def _log_change(self, load: asyncio.Future) -> None:
        """Log why the model is not loaded when that changes (and retrieve the exception, which asyncio
        would otherwise log with a traceback on every probe). TwinRay errors say it in one line."""
        if load.cancelled():
            return
        error = load.exception()
        reason = f"{type(error).__name__}: {error}" if error else ""
        if reason != self._reason:
            log.log(logging.WARNING if reason else logging.INFO, "model %s", f"not loaded: {reason}" if reason else "loaded")
            self._reason = reason

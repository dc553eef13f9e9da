"""Published model versions, loaded from the registry on demand and kept in a small LRU cache."""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Callable
from typing import Any

from torch import nn

from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.registry import ModelRegistry

Builder = Callable[[dict[str, Any], bytes], nn.Module]
# (name, version, config, weights sha256) -> a remote stand-in for the module (services/common/triton_runner.py)
Runner = Callable[[str, int, dict[str, Any], str], Any]


class ModelCache:
    """Serves `name` at its pinned version, or another version a request names: built in-process from
    its weights, or, with a `runner`, a stand-in that runs it elsewhere (Triton; weights not loaded here)."""

    def __init__(
        self,
        registry: ModelRegistry,
        name: str,
        build: Builder,
        *,
        pinned: str = "latest",
        capacity: int = 2,
        runner: Runner | None = None,
    ) -> None:
        self.registry = registry
        self.name = name
        self.build = build
        self.runner = runner
        self.capacity = capacity
        self._models: collections.OrderedDict[int, tuple[nn.Module, dict[str, Any]]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._pinned_request = pinned
        self._pinned: int | None = None  # resolved on first use, so a replica starts while the store is down

    def pinned(self) -> int:
        if self._pinned is None:
            self._pinned = self.registry.resolve(self.name, self._pinned_request)
        return self._pinned

    def repin(self, version: str) -> None:
        """Make `version` the default (Serve `user_config` reconfiguration); loads it first."""
        resolved = self.registry.resolve(self.name, version)
        self.get(str(resolved))
        self._pinned_request, self._pinned = version, resolved

    def get(self, version: str = "", name: str = "") -> tuple[int, nn.Module, dict[str, Any]]:
        """(resolved version, module in eval mode, its config); "" = the pinned version."""
        if name and name != self.name:
            raise InvalidInput(f"this service serves model {self.name!r}, not {name!r}")
        resolved = self.pinned() if version == "" else self.registry.resolve(self.name, version)
        with self._lock:
            if resolved in self._models:
                self._models.move_to_end(resolved)
                module, config = self._models[resolved]
                return resolved, module, config
        if self.runner is None:
            loaded = self.registry.load(self.name, resolved)
            module, config = self.build(loaded.config, loaded.weights), loaded.config
        else:
            weights_sha256 = self.registry.manifest(self.name, resolved)["weights_sha256"]
            config = json.loads(self.registry.read_file(self.name, resolved, "config.json"))
            module = self.runner(self.name, resolved, config, weights_sha256)
        with self._lock:
            self._models[resolved] = (module, config)
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
        return resolved, module, config

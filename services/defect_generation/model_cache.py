"""The three published models of defect generation, loaded together on first use and cached per
resolved versions (a replica starts while they are not trained yet, like twinray.services.common.model_cache)."""

from __future__ import annotations

import collections
import dataclasses
import json
import threading

from twinray.services.common.model_cache import Runner
from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage.base import ArtifactStore
from twinray.shared.synthesis.defects import DefectGenerators, load_generators
from twinray.v1 import common_pb2, defect_generation_pb2

MASKS, NORMAL, ENCODER = "defect-masks", "normal-manifold", "defect-encoder"
Versions = dict[str, str]  # model name -> resolved version; no ENCODER entry = plain RePaint


class GeneratorCache:
    """Serves the pinned versions (resolved once, on first use), or those a request names. The encoder
    goes with the normal-manifold DDPM it was trained to steer (recorded in its config). With a
    `runner` (Triton), the mask DDPM's UNet runs there (services/defect_generation/triton_unet.py)."""

    def __init__(self, store: ArtifactStore, *, pinned: Versions, capacity: int = 2, runner: Runner | None = None) -> None:
        self.store = store
        self.registry = ModelRegistry(store)
        self.runner = runner
        self.capacity = capacity
        self._requested = dict(pinned)
        self._pinned: dict[str, str] = {}
        self._loaded: collections.OrderedDict[tuple[tuple[str, str], ...], DefectGenerators] = collections.OrderedDict()
        self._lock = threading.Lock()

    def repin(self, pinned: Versions) -> None:
        """New default versions (Serve `user_config`), loaded first like ModelCache.repin: a version
        that does not load leaves the old ones in place."""
        previous = self._requested, self._pinned
        self._requested, self._pinned = {**self._requested, **pinned}, {}
        try:
            self.get(self.resolve(defect_generation_pb2.DefectModels()))
        except Exception:
            self._requested, self._pinned = previous
            raise

    def _pinned_version(self, name: str, normal: str = "") -> str:
        """A pinned version, resolved once (the encoder once per normal-manifold version)."""
        key = f"{name}/{normal}"
        if key not in self._pinned:
            requested = self._requested.get(name, "latest")
            self._pinned[key] = (
                self._encoder(requested, normal) if name == ENCODER else str(self.registry.resolve(name, requested))
            )
        return self._pinned[key]

    def _steered(self, encoder: int) -> str:
        """The normal-manifold version a published encoder was trained to steer."""
        config = json.loads(self.registry.read_file(ENCODER, encoder, "config.json"))
        return str(config.get("normal_manifold_version", ""))

    def _encoder(self, requested: str, normal: str) -> str:
        """The encoder version for normal-manifold `normal`: "latest" = the newest trained on it ("" if
        none: plain RePaint), "none" = plain RePaint; a named one must have been trained on it."""
        if requested.strip().lower() == "none":
            return ""
        if requested.strip().lower() in ("", "latest"):
            return next((str(v) for v in reversed(self.registry.versions(ENCODER)) if self._steered(v) == normal), "")
        version = self.registry.resolve(ENCODER, requested)
        if (steered := self._steered(version)) != normal:
            raise InvalidInput(
                f"{ENCODER} v{version} steers {NORMAL} v{steered}, not v{normal}: name a matching pair of versions"
            )
        return str(version)

    def resolve(self, models: defect_generation_pb2.DefectModels, fallback: Versions | None = None) -> Versions:
        """The versions a request asks for: its own, else `fallback`'s (a resumed job's), else the pinned ones."""
        for name, ref in ((MASKS, models.masks), (NORMAL, models.normal), (ENCODER, models.encoder)):
            if ref.name and ref.name != name:
                raise InvalidInput(f"model {ref.name!r} given where {name!r} belongs")
        resolved = {}
        for name, ref in ((MASKS, models.masks), (NORMAL, models.normal)):
            if ref.version:
                resolved[name] = str(self.registry.resolve(name, ref.version))
            else:
                resolved[name] = fallback[name] if fallback else self._pinned_version(name)
        if models.encoder.version:
            resolved[ENCODER] = self._encoder(models.encoder.version, resolved[NORMAL])
        elif fallback:
            resolved[ENCODER] = fallback.get(ENCODER, "")
        else:
            resolved[ENCODER] = self._pinned_version(ENCODER, resolved[NORMAL])
        return {name: version for name, version in resolved.items() if version}

    def get(self, versions: Versions) -> DefectGenerators:
        """The generators of resolved `versions` (loaded on first use: NotFound / Unavailable from the store)."""
        key = tuple(sorted(versions.items()))
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
        generators = load_generators(
            self.store, masks=versions[MASKS], normal=versions[NORMAL], encoder=versions.get(ENCODER, "")
        )
        if self.runner is not None:
            masks = int(versions[MASKS])
            config = json.loads(self.registry.read_file(MASKS, masks, "config.json"))
            remote = self.runner(MASKS, masks, config, self.registry.manifest(MASKS, masks)["weights_sha256"])
            generators = dataclasses.replace(generators, mask_unet=remote)
        with self._lock:
            self._loaded[key] = generators
            while len(self._loaded) > self.capacity:
                self._loaded.popitem(last=False)
        return generators


def provenance_models(versions: Versions, only: tuple[str, ...] = (MASKS, NORMAL, ENCODER)) -> list[common_pb2.ModelRef]:
    """The models that answered, as ModelRefs in a fixed order."""
    return [common_pb2.ModelRef(name=name, version=versions[name]) for name in only if name in versions]

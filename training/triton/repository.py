"""Write published model versions into the artifact store as a Triton model repository.

Order makes a half-finished export invisible to Triton and to readers: a version's files first,
then its model's config.pbtxt (Triton serves only the versions it lists, and model.py refuses an
ONNX file whose sha256 differs from the one listed), then `triton/manifest.json` last. Exporting a
version already exported from the same weights is a no-op; earlier versions stay served.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.resources
import json
from collections.abc import Callable, Sequence

import torch

from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.registry import LoadedModel, ModelRegistry
from twinray.shared.platform.storage import ArtifactStore, sha256_bytes
from twinray.shared.platform.triton import MANIFEST_KEY, SIGNATURES, Signature, model_dir
from twinray.training.triton.networks import EXPORTABLES, Exportable
from twinray.training.triton.pbtxt import ExportedVersion, config_pbtxt

FORMAT = "twinray-triton/1"
MAX_EXPORT_BATCH = 4096
# "python": model.py runs model.onnx with onnxruntime (the Triton nvidia-pytriton bundles; tested).
# "onnxruntime": Triton's native backend runs model.onnx (the official image; not runnable here).
BACKENDS = ("python", "onnxruntime")


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    max_batch_size: int = 8  # Triton's dynamic batcher merges concurrent requests up to this
    queue_delay_us: int = 2000  # how long it waits for more requests to join a batch
    instances: int = 1  # model instances (onnxruntime sessions) per Triton server
    backend: str = "python"  # one of BACKENDS


def parse_models(models: Sequence[str]) -> list[tuple[str, str]]:
    """["segmentation", "detection:3"] -> [("segmentation", "latest"), ("detection", "3")]."""
    parsed = []
    for item in models:
        name, _, version = item.partition(":")
        if name not in SIGNATURES:
            raise InvalidInput(f"no served network is called {name!r}: choose from {', '.join(SIGNATURES)}")
        parsed.append((name, version or "latest"))
    return parsed


def to_onnx(exportable: Exportable, signature: Signature) -> tuple[bytes, dict[str, list[int]]]:
    """ONNX bytes (torch's dynamo exporter, batch dimension dynamic) and every tensor's shape past the batch."""
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    with torch.no_grad():
        outputs = exportable.module(*exportable.example)
        program = torch.onnx.export(
            exportable.module,
            exportable.example,
            input_names=[t.name for t in signature.inputs],
            output_names=[t.name for t in signature.outputs],
            dynamic_shapes=tuple({0: batch} for _ in exportable.example),
            dynamo=True,
            verbose=False,
        )
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    tensors = zip([*signature.inputs, *signature.outputs], [*exportable.example, *outputs])
    return program.model_proto.SerializeToString(), {t.name: list(value.shape[1:]) for t, value in tensors}


def read_manifest(store: ArtifactStore) -> dict:
    if not store.exists(MANIFEST_KEY):
        return {"format": FORMAT, "models": {}}
    return json.loads(store.get_bytes(MANIFEST_KEY))


def _still_there(store: ArtifactStore, entry: dict) -> bool:
    return all(store.exists(key) for key in entry["files"])


def _export_version(store: ArtifactStore, loaded: LoadedModel, backend_py: bytes) -> dict:
    """A version's model.onnx and model.py into the store; its manifest entry."""
    prefix = f"{model_dir(loaded.name)}/{loaded.version}"
    onnx_bytes, dims = to_onnx(EXPORTABLES[loaded.name](loaded.config, loaded.weights), SIGNATURES[loaded.name])
    files = {}
    for filename, data in (("model.onnx", onnx_bytes), ("model.py", backend_py)):
        ref = store.put_bytes(f"{prefix}/{filename}", data)
        files[ref.key] = {"sha256": ref.sha256, "size": ref.size}
    onnx_sha256 = files[f"{prefix}/model.onnx"]["sha256"]
    return {"weights_sha256": loaded.manifest["weights_sha256"], "onnx_sha256": onnx_sha256, "dims": dims, "files": files}


def _write_config(store: ArtifactStore, name: str, entries: dict, options: ExportOptions) -> dict:
    """config.pbtxt serving every version in `entries` (rewritten only when its text changes)."""
    exported = [ExportedVersion(int(v), e["weights_sha256"], e["onnx_sha256"], e["dims"]) for v, e in entries.items()]
    text = config_pbtxt(
        name,
        SIGNATURES[name],
        exported,
        max_batch_size=options.max_batch_size,
        queue_delay_us=options.queue_delay_us,
        instances=options.instances,
        backend=options.backend,
    ).encode()
    key = f"{model_dir(name)}/config.pbtxt"
    if store.exists(key) and store.get_bytes(key) == text:
        return {"sha256": sha256_bytes(text), "size": len(text)}
    ref = store.put_bytes(key, text, content_type="text/plain")
    return {"sha256": ref.sha256, "size": ref.size}


def export_triton(
    store: ArtifactStore,
    models: Sequence[str] = (),
    *,
    options: ExportOptions = ExportOptions(),
    log: Callable[[str], None] = print,
) -> dict:
    """Export `models` ("name" = its latest version, or "name:version"; none = every served network
    that has a published version) and return the repository manifest."""
    if options.backend not in BACKENDS:
        raise InvalidInput(f"backend must be one of {', '.join(BACKENDS)}, got {options.backend!r}")
    registry = ModelRegistry(store)
    wanted = parse_models(models) if models else [(name, "latest") for name in SIGNATURES if registry.versions(name)]
    manifest = read_manifest(store)
    backend_py = importlib.resources.files("twinray.training.triton").joinpath("backend_model.py").read_bytes()
    for name, requested in wanted:
        loaded = registry.load(name, requested)
        entries = {v: e for v, e in manifest["models"].get(name, {}).get("versions", {}).items() if _still_there(store, e)}
        done = entries.get(str(loaded.version))
        if done and done["weights_sha256"] == loaded.manifest["weights_sha256"]:
            log(f"{name} v{loaded.version}: already exported")
        else:
            entries[str(loaded.version)] = _export_version(store, loaded, backend_py)
            log(f"{name} v{loaded.version}: {store.uri(model_dir(name))}")
        manifest["models"][name] = {"config": _write_config(store, name, entries, options), "versions": entries}
    manifest["updated_at"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    store.put_bytes(MANIFEST_KEY, json.dumps(manifest, indent=2, sort_keys=True).encode(), content_type="application/json")
    return manifest

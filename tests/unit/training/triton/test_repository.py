"""`export_triton` writes a version's files, then its config.pbtxt, then the manifest last; exports a
version once; keeps earlier versions served; and its ONNX file is a valid graph with a dynamic batch."""

from __future__ import annotations

import io
import json
from pathlib import Path

import onnx
import pytest
import torch

from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig
from twinray.shared.platform.errors import InvalidInput, NotFound
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import ArtifactRef, LocalStore
from twinray.shared.platform.triton import MANIFEST_KEY, parameter_key
from twinray.training.triton.repository import ExportOptions, export_triton, parse_models


class RecordingStore(LocalStore):
    """A local store that remembers the order of its writes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "twinray")
        self.written: list[str] = []

    def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> ArtifactRef:
        self.written.append(key)
        return super().put_bytes(key, data, content_type=content_type)


def _publish(store: LocalStore, size: int) -> int:
    config = SegmenterConfig(input_size=size, channels=(4, 8))
    torch.manual_seed(size)
    weights = io.BytesIO()
    torch.save(AnatomySegmenter(config).state_dict(), weights)
    registry = ModelRegistry(store)
    return registry.publish(
        "segmentation", weights=weights.getvalue(), config=config.to_dict(), metrics={}, training={}, card=""
    ).version


def test_files_then_config_then_manifest_and_each_version_once(tmp_path: Path):
    store = RecordingStore(tmp_path)
    first = _publish(store, 32)
    store.written.clear()
    manifest = export_triton(store, ["segmentation"], log=lambda _: None)
    prefix = f"triton/segmentation/{first}"
    assert store.written == [f"{prefix}/model.onnx", f"{prefix}/model.py", "triton/segmentation/config.pbtxt", MANIFEST_KEY]
    entry = manifest["models"]["segmentation"]["versions"][str(first)]
    assert entry["weights_sha256"] == ModelRegistry(store).manifest("segmentation", first)["weights_sha256"]
    assert entry["dims"] == {"image": [1, 32, 32], "logits": [8, 32, 32]}
    assert json.loads(store.get_bytes(MANIFEST_KEY)) == manifest

    model = onnx.load_from_string(store.get_bytes(f"{prefix}/model.onnx"))
    onnx.checker.check_model(model)
    (graph_input,) = model.graph.input
    assert graph_input.name == "image" and graph_input.type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch

    store.written.clear()
    export_triton(store, ["segmentation"], log=lambda _: None)
    assert store.written == [MANIFEST_KEY]  # the same weights: nothing exported again

    store.written.clear()
    export_triton(store, ["segmentation"], options=ExportOptions(max_batch_size=4, backend="onnxruntime"), log=lambda _: None)
    assert store.written == ["triton/segmentation/config.pbtxt", MANIFEST_KEY]  # other options: only the config
    config = store.get_bytes("triton/segmentation/config.pbtxt").decode()
    assert 'backend: "onnxruntime"' in config and "max_batch_size: 4" in config

    second = _publish(store, 64)
    export_triton(store, [], log=lambda _: None)  # every served network with a published version
    config = store.get_bytes("triton/segmentation/config.pbtxt").decode()
    assert f"versions: [ {first}, {second} ]" in config and "dims: [ 1, -1, -1 ]" in config
    for version in (first, second):
        assert parameter_key(version, "weights_sha256") in config


def test_unknown_networks_and_unpublished_versions_are_refused(tmp_path: Path):
    with pytest.raises(InvalidInput, match="no served network"):
        parse_models(["segmenter"])
    assert parse_models(["detection:3", "segmentation"]) == [("detection", "3"), ("segmentation", "latest")]
    with pytest.raises(NotFound):
        export_triton(LocalStore(tmp_path, "twinray"), ["segmentation"], log=lambda _: None)
    with pytest.raises(InvalidInput, match="backend"):
        export_triton(LocalStore(tmp_path, "twinray"), ["segmentation"], options=ExportOptions(backend="tensorrt"))

"""config.pbtxt: one shape over the exported versions, their provenance as parameters, and text that
Triton's model-config parser reads (checked with the ModelConfig message tritonclient ships)."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from twinray.shared.platform.triton import SIGNATURES, parameter_key
from twinray.training.triton.pbtxt import ExportedVersion, config_pbtxt, merged_dims


def _version(number: int, size: int) -> ExportedVersion:
    return ExportedVersion(number, f"w{number}", f"o{number}", {"image": [1, size, size], "logits": [8, size, size]})


def test_versions_of_another_size_make_those_dimensions_variable():
    assert merged_dims([_version(1, 64), _version(2, 64)], "image") == [1, 64, 64]
    assert merged_dims([_version(1, 64), _version(2, 256)], "logits") == [8, -1, -1]


def test_versions_of_another_rank_are_refused():
    other = ExportedVersion(3, "w", "o", {"image": [64, 64], "logits": [8, 64, 64]})
    with pytest.raises(ValueError, match="rank"):
        merged_dims([_version(1, 64), other], "image")


def test_the_config_parses_as_tritons_model_config():
    text = config_pbtxt(
        "segmentation",
        SIGNATURES["segmentation"],
        [_version(2, 256), _version(1, 64)],
        max_batch_size=8,
        queue_delay_us=2000,
        instances=1,
    )
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert (config.name, config.backend, config.max_batch_size) == ("segmentation", "python", 8)
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("image", model_config_pb2.TYPE_FP32, [1, -1, -1])]
    assert [t.name for t in config.output] == ["logits"]
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert list(config.version_policy.specific.versions) == [1, 2]
    assert config.parameters[parameter_key(2, "weights_sha256")].string_value == "w2"
    assert config.parameters[parameter_key(1, "onnx_sha256")].string_value == "o1"


def test_the_native_onnxruntime_backend_config_parses_too():
    text = config_pbtxt(
        "detection",
        SIGNATURES["detection"],
        [_detector(1)],
        max_batch_size=4,
        queue_delay_us=100,
        instances=2,
        backend="onnxruntime",
    )
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert (config.backend, config.instance_group[0].count) == ("onnxruntime", 2)
    assert [t.name for t in config.output] == ["cls_logits", "bbox_regression"]
    assert "onnx_intra_op_threads" not in config.parameters  # model.py's own setting


def _detector(number: int) -> ExportedVersion:
    dims = {"inputs": [2, 64, 64], "cls_logits": [774, 3], "bbox_regression": [774, 4]}
    return ExportedVersion(number, "w", "o", dims)

"""config.pbtxt of one exported model: every exported version, dynamic batching, and per version the
registry weights' and the ONNX file's sha256 as parameters (what the services' runners check)."""

from __future__ import annotations

import dataclasses

from twinray.shared.platform.triton import Signature, parameter_key


@dataclasses.dataclass(frozen=True)
class ExportedVersion:
    version: int
    weights_sha256: str
    onnx_sha256: str
    dims: dict[str, list[int]]  # tensor name -> shape past the batch dimension


def merged_dims(versions: list[ExportedVersion], tensor: str) -> list[int]:
    """One shape for all versions: a dimension they disagree on becomes -1 (variable)."""
    shapes = [v.dims[tensor] for v in versions]
    if len({len(shape) for shape in shapes}) != 1:
        raise ValueError(f"exported versions disagree on the rank of tensor {tensor!r}: {shapes}")
    return [shape_dims[0] if len(set(shape_dims)) == 1 else -1 for shape_dims in zip(*shapes)]


def _tensors(signature_tensors, versions: list[ExportedVersion]) -> str:
    return ",\n".join(
        f'  {{ name: "{t.name}" data_type: TYPE_{t.dtype} dims: [ {", ".join(map(str, merged_dims(versions, t.name)))} ] }}'
        for t in signature_tensors
    )


def config_pbtxt(
    name: str,
    signature: Signature,
    versions: list[ExportedVersion],
    *,
    max_batch_size: int,
    queue_delay_us: int,
    instances: int,
    backend: str = "python",
) -> str:
    """The text of `triton/<name>/config.pbtxt` serving `versions` with `backend` ("python": our
    model.py runs the ONNX file; "onnxruntime": Triton's own backend does)."""
    versions = sorted(versions, key=lambda v: v.version)
    parameters = [("onnx_intra_op_threads", "1")] if backend == "python" else []
    for v in versions:
        parameters += [(parameter_key(v.version, "weights_sha256"), v.weights_sha256)]
        parameters += [(parameter_key(v.version, "onnx_sha256"), v.onnx_sha256)]
    lines = [
        f'name: "{name}"',
        f'backend: "{backend}"',
        f"max_batch_size: {max_batch_size}",
        f"input [\n{_tensors(signature.inputs, versions)}\n]",
        f"output [\n{_tensors(signature.outputs, versions)}\n]",
        f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}",
        f"instance_group [ {{ kind: KIND_CPU count: {instances} }} ]",
        f"version_policy: {{ specific: {{ versions: [ {', '.join(str(v.version) for v in versions)} ] }} }}",
        *(f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}' for key, value in parameters),
    ]
    return "\n".join(lines) + "\n"

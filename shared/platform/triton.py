"""The contract between `twinray export triton` (training/) and the services' Triton runners
(services/), which may not import each other: where the repository lives in the artifact store,
what each exported network's tensors are called, and where a version's provenance is recorded.

Layout under `triton/` (a Triton model repository; Triton model name = registry model name,
Triton version = registry version):

    triton/<model>/<version>/model.onnx   the network, batch dimension dynamic
    triton/<model>/<version>/model.py     runs model.onnx with onnxruntime in Triton's python backend
    triton/<model>/config.pbtxt           written after its versions' files; lists them and, per
                                          version, the registry weights' and the ONNX file's sha256
    triton/manifest.json                  written last: every file with its sha256 and size
"""

from __future__ import annotations

import dataclasses

REPOSITORY_PREFIX = "triton"
MANIFEST_KEY = f"{REPOSITORY_PREFIX}/manifest.json"


@dataclasses.dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # Triton's name: "FP32" or "INT64"


@dataclasses.dataclass(frozen=True)
class Signature:
    """The tensors of one exported network, each with a leading batch dimension."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]


_IMAGE = Tensor("image", "FP32")
_DDPM = Signature((Tensor("sample", "FP32"), Tensor("timestep", "INT64")), (Tensor("prediction", "FP32"),))

# Every network a service runs, by registry model name.
SIGNATURES: dict[str, Signature] = {
    "segmentation": Signature((_IMAGE,), (Tensor("logits", "FP32"),)),
    "normal-synthesis": Signature((_IMAGE, Tensor("anatomy", "INT64")), (Tensor("twin", "FP32"),)),
    "matching-pairs": Signature((_IMAGE,), (Tensor("translation", "FP32"),)),
    # RetinaNet up to its head: anchors, box decoding and NMS stay in the service.
    "detection": Signature((Tensor("inputs", "FP32"),), (Tensor("cls_logits", "FP32"), Tensor("bbox_regression", "FP32"))),
    "defect-masks": _DDPM,
    "normal-manifold": _DDPM,
}


def model_dir(model: str) -> str:
    return f"{REPOSITORY_PREFIX}/{model}"


def parameter_key(version: int, what: str) -> str:
    """config.pbtxt parameter naming one version's provenance, e.g. `twinray.3.weights_sha256`."""
    return f"twinray.{version}.{what}"

"""Run a service's networks on a Triton server (TWINRAY_TRITON_URL) instead of in-process.

A `TritonModule` stands where the torch module stood: the servicer calls it the same way, tensors in
and out, so servicers have one code path whichever runs the network. `triton_runner(settings)`
is the one place that picks: None (in-process) when no Triton URL is set. Before a version is used
its Triton model must be READY and record the same weights sha256 as the registry (so Triton never
answers with other weights than the version named in the response). Triton's errors become TwinRay
errors: unreachable -> UNAVAILABLE, model or version not served -> NOT_FOUND, other weights or an
input the exported model refuses -> FAILED_PRECONDITION.

The client is tritonclient's gRPC module from the base `tritonclient` wheel: its `[grpc]` extra
pins protobuf<7, but its generated code runs on the protobuf 7 TwinRay pins (tested). It is imported
only when a Triton URL is configured.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from twinray.services.common.model_cache import Runner
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import FailedPrecondition, NotFound, TwinRayError, Unavailable
from twinray.shared.platform.triton import SIGNATURES, parameter_key

T = TypeVar("T")
NUMPY_DTYPES = {"FP32": np.float32, "INT64": np.int64}
TIMEOUT_S = 60.0


class TritonEndpoint:
    """One gRPC connection to a Triton server, shared by a process's services."""

    def __init__(self, url: str, timeout_s: float = TIMEOUT_S) -> None:
        import tritonclient.grpc as triton
        from tritonclient.utils import InferenceServerException

        self.url = url
        self.timeout_s = timeout_s
        self.triton, self.exception = triton, InferenceServerException
        self.client = triton.InferenceServerClient(url)

    def _error(self, error: Any, name: str, version: int) -> TwinRayError:
        code, first_line = str(error.status()), (error.message() or "").splitlines()[:1]
        detail = first_line[0] if first_line else code
        if code in ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"):
            return Unavailable(f"Triton at {self.url} is unavailable ({code.removeprefix('StatusCode.')}): {detail}")
        if code == "StatusCode.NOT_FOUND":
            return self._not_served(name, version)
        if code == "StatusCode.INVALID_ARGUMENT":  # the exported model does not take what this service sends
            return FailedPrecondition(f"Triton at {self.url} refused the input of model {name!r} version {version}: {detail}")
        return Unavailable(f"Triton at {self.url} could not run model {name!r} version {version}: {detail}")

    def _not_served(self, name: str, version: int) -> NotFound:
        return NotFound(
            f"Triton at {self.url} does not serve model {name!r} version {version}: "
            f"export it with `twinray export triton --models {name}:{version}`"
        )

    def _call(self, call: Callable[[], T], name: str, version: int) -> T:
        try:
            return call()
        except self.exception as error:
            raise self._error(error, name, version) from None

    def check(self, name: str, version: int, weights_sha256: str) -> None:
        """The model version is READY on Triton and was exported from exactly these weights."""
        timeout = self.timeout_s
        if not self._call(lambda: self.client.is_model_ready(name, str(version), client_timeout=timeout), name, version):
            raise self._not_served(name, version)
        config = self._call(lambda: self.client.get_model_config(name, as_json=True, client_timeout=timeout), name, version)
        recorded = config["config"].get("parameters", {}).get(parameter_key(version, "weights_sha256"), {}).get("string_value")
        if recorded != weights_sha256:
            raise FailedPrecondition(
                f"Triton at {self.url} serves model {name!r} version {version} from other weights than the registry's: "
                f"export it again with `twinray export triton --models {name}:{version}`"
            )

    def infer(self, name: str, version: int, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One request: `arrays` in the order of SIGNATURES[name].inputs, outputs in its order."""
        signature = SIGNATURES[name]
        inputs = []
        for tensor, array in zip(signature.inputs, arrays, strict=True):
            infer_input = self.triton.InferInput(tensor.name, list(array.shape), tensor.dtype)
            infer_input.set_data_from_numpy(np.ascontiguousarray(array, dtype=NUMPY_DTYPES[tensor.dtype]))
            inputs.append(infer_input)
        outputs = [self.triton.InferRequestedOutput(tensor.name) for tensor in signature.outputs]
        result = self._call(
            lambda: self.client.infer(name, inputs, model_version=str(version), outputs=outputs, client_timeout=self.timeout_s),
            name,
            version,
        )
        return [result.as_numpy(tensor.name) for tensor in signature.outputs]


class TritonModule:
    """A published network version served by Triton, called like its torch module: CPU tensors in
    (the signature's inputs, in order), one tensor out, or a tuple when it has several outputs."""

    def __init__(self, endpoint: TritonEndpoint, name: str, version: int, config: dict[str, Any]) -> None:
        self.endpoint, self.name, self.version, self.config = endpoint, name, version, config

    def eval(self) -> TritonModule:
        return self  # nothing to switch: Triton runs the exported eval-mode graph

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        arrays = self.endpoint.infer(self.name, self.version, [t.detach().cpu().numpy() for t in tensors])
        outputs = tuple(torch.from_numpy(np.array(array)) for array in arrays)
        return outputs[0] if len(outputs) == 1 else outputs


@functools.cache
def _endpoint(url: str) -> TritonEndpoint:
    return TritonEndpoint(url)


def triton_runner(
    settings: Settings, remote: Callable[[TritonEndpoint, str, int, dict[str, Any]], Any] = TritonModule
) -> Runner | None:
    """What runs a loaded version: None = its torch module in-process (no `triton_url`), else a
    `remote` (default TritonModule) on the configured Triton, once the version checks out there."""
    if not settings.triton_url:
        return None
    endpoint = _endpoint(settings.triton_url)

    def run_on_triton(name: str, version: int, config: dict[str, Any], weights_sha256: str) -> Any:
        endpoint.check(name, version, weights_sha256)
        return remote(endpoint, name, version, config)

    return run_on_triton

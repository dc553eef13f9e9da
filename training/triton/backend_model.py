"""model.py of every exported network: Triton's python backend runs it beside the version's
model.onnx (the Triton that nvidia-pytriton bundles has no onnxruntime backend).

It runs in Triton's Python (which needs numpy and onnxruntime), never in TwinRay's: it imports
nothing of TwinRay. On load it checks model.onnx against the sha256 config.pbtxt records for this
version, so a replaced or half-copied file is refused instead of served. Requests that Triton's
dynamic batcher hands over together run as one onnxruntime call.
"""

import hashlib
import json
import os

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils


def _parameter(config, key, default=""):
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        version = args["model_version"]
        path = os.path.join(args["model_repository"], version, "model.onnx")
        with open(path, "rb") as f:
            data = f.read()
        expected = _parameter(config, f"twinray.{version}.onnx_sha256")
        found = hashlib.sha256(data).hexdigest()
        if found != expected:
            raise pb_utils.TritonModelException(f"{path} has sha256 {found}, config.pbtxt expects {expected!r}: export it again")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(_parameter(config, "onnx_intra_op_threads", "1"))
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        self.inputs = [tensor["name"] for tensor in config["input"]]
        self.outputs = [tensor["name"] for tensor in config["output"]]

    def execute(self, requests):
        """One onnxruntime run per group of requests whose inputs have the same shapes past the batch."""
        groups = {}
        for index, request in enumerate(requests):
            arrays = [pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs]
            key = tuple((array.shape[1:], array.dtype.str) for array in arrays)
            groups.setdefault(key, []).append((index, arrays))
        responses = [None] * len(requests)
        for members in groups.values():
            feed = {name: np.concatenate([arrays[k] for _, arrays in members]) for k, name in enumerate(self.inputs)}
            try:
                outputs = self.session.run(self.outputs, feed)
            except Exception as error:  # onnxruntime's own: wrong shape or dtype
                message = f"onnxruntime: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
                for index, _ in members:
                    responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
                continue
            start = 0
            for index, arrays in members:
                stop = start + len(arrays[0])
                tensors = [
                    pb_utils.Tensor(name, np.ascontiguousarray(out[start:stop])) for name, out in zip(self.outputs, outputs)
                ]
                responses[index] = pb_utils.InferenceResponse(tensors)
                start = stop
        return responses

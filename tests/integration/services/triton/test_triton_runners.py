"""Every exported network answers on a real Triton server (from the loopback S3 repository) as it
does in-process, within TOLERANCE; the detector's boxes too; dynamic batching merges concurrent
requests; and Triton's failures reach the service as precise statuses."""

from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest
import torch

from twinray.services.common.errors import status_code
from twinray.services.common.triton_runner import TritonEndpoint, TritonModule
from twinray.services.detection.triton_detector import TritonDetector
from twinray.shared.data.phantoms.cxr import render_phantom
from twinray.shared.models.components.twin import to_input_size
from twinray.shared.models.detection.network import DetectorConfig, detect, detector_from_weights, detector_inputs
from twinray.shared.platform.errors import FailedPrecondition, NotFound, TwinRayError, Unavailable
from twinray.shared.platform.imaging import labels_to_size
from twinray.shared.platform.registry import ModelRegistry
from twinray.training.triton.networks import EXPORTABLES

pytestmark = pytest.mark.integration

TOLERANCE = 1e-4  # max abs difference of any float32 output, Triton (onnxruntime) vs in-process torch
NETWORKS = ("segmentation", "normal-synthesis", "matching-pairs", "detection", "defect-masks")


def _phantoms(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three phantoms at `size` (drawn at 64 px at least, then resized as the services resize):
    images (3,1,S,S), their twins (3,1,S,S) and anatomy maps (3,S,S) int64."""
    phantoms = [render_phantom(500 + i, max(size, 64), lesion_seed=i) for i in range(3)]
    images, twins = (
        to_input_size(torch.from_numpy(np.stack(stack))[:, None], size) for stack in zip(*((p.image, p.twin) for p in phantoms))
    )
    anatomy = torch.from_numpy(np.stack([labels_to_size(p.anatomy, size, size) for p in phantoms]).astype(np.int64))
    return images, twins, anatomy


def network_inputs(name: str, config: dict) -> tuple[torch.Tensor, ...]:
    """Three realistic inputs of `name`'s exported network (phantoms, their anatomy and residuals)."""
    if name == "defect-masks":
        noise = torch.randn(3, 1, config["image_size"], config["image_size"], generator=torch.Generator().manual_seed(5))
        return noise, torch.tensor([[0], [config["train_timesteps"] // 2], [config["train_timesteps"] - 1]])
    images, twins, anatomy = _phantoms(config["input_size"])
    if name == "normal-synthesis":
        return images, anatomy
    if name == "detection":
        return (detector_inputs(DetectorConfig.from_dict(config), images, images - twins, anatomy),)
    return (images,)


def _outputs(value: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return value if isinstance(value, tuple) else (value,)


@pytest.fixture(scope="module")
def endpoint(triton_server: str) -> TritonEndpoint:
    return TritonEndpoint(triton_server)


@pytest.mark.parametrize("name", NETWORKS)
def test_the_network_on_triton_answers_as_in_process(name, endpoint, triton_store, triton_exported):
    registry = ModelRegistry(triton_store)
    version = registry.latest(name)
    assert str(version) in triton_exported["models"][name]["versions"]
    loaded = registry.load(name, version)
    endpoint.check(name, version, loaded.manifest["weights_sha256"])
    inputs = network_inputs(name, loaded.config)
    with torch.no_grad():
        expected = _outputs(EXPORTABLES[name](loaded.config, loaded.weights).module(*inputs))
    answered = _outputs(TritonModule(endpoint, name, version, loaded.config)(*inputs))
    assert [a.shape for a in answered] == [e.shape for e in expected]
    assert all(a.dtype == torch.float32 for a in answered)
    differences = [float((a - e).abs().max()) for a, e in zip(answered, expected)]
    print(f"{name} v{version}: max abs difference Triton vs in-process {max(differences):.2e}")
    assert max(differences) <= TOLERANCE
    assert max(float(e.abs().max()) for e in expected) > 1e-3  # a network that answers zeros would prove nothing


def test_the_detector_on_triton_finds_the_boxes_found_in_process(endpoint, triton_store, triton_exported):
    registry = ModelRegistry(triton_store)
    version = registry.latest("detection")
    loaded = registry.load("detection", version)
    (inputs,) = network_inputs("detection", loaded.config)
    local = detect(detector_from_weights(loaded.config, loaded.weights), inputs, torch.device("cpu"), batch_size=3)
    remote = detect(TritonDetector(endpoint, "detection", version, loaded.config), inputs, torch.device("cpu"), batch_size=3)
    assert sum(len(found["boxes"]) for found in local) > 0  # the session detector has no score floor
    for mine, theirs in zip(local, remote):
        assert torch.equal(mine["labels"], theirs["labels"])
        torch.testing.assert_close(theirs["scores"], mine["scores"], atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(theirs["boxes"], mine["boxes"], atol=1e-3, rtol=0)  # px at the input size


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(endpoint, triton_store, triton_exported):
    registry = ModelRegistry(triton_store)
    version = registry.latest("segmentation")
    loaded = registry.load("segmentation", version)
    segmenter = TritonModule(endpoint, "segmentation", version, loaded.config)
    (images,) = network_inputs("segmentation", loaded.config)
    singles = [images[i % 3 : i % 3 + 1] for i in range(8)]
    before = _executions(endpoint, version)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(segmenter, singles))
    with torch.no_grad():
        expected = EXPORTABLES["segmentation"](loaded.config, loaded.weights).module(images)
    for i, answer in enumerate(answers):
        assert float((answer - expected[i % 3 : i % 3 + 1]).abs().max()) <= TOLERANCE
    inferences, executions = (after - earlier for after, earlier in zip(_executions(endpoint, version), before))
    assert inferences == 8 and executions < 8  # Triton's dynamic batcher ran some requests together


def _executions(endpoint: TritonEndpoint, version: int) -> tuple[int, int]:
    stats = endpoint.client.get_inference_statistics("segmentation", str(version), as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def _refused(call) -> TwinRayError:
    with pytest.raises(TwinRayError) as raised:
        call()
    message = str(raised.value)
    assert "\n" not in message and "Traceback" not in message
    return raised.value


def test_an_unreachable_triton_is_unavailable(closed_port):
    error = _refused(lambda: TritonEndpoint(f"127.0.0.1:{closed_port}", timeout_s=5).check("segmentation", 1, "0" * 64))
    assert isinstance(error, Unavailable) and status_code(error).name == "UNAVAILABLE"
    assert f"127.0.0.1:{closed_port}" in str(error)


def test_a_version_triton_does_not_serve_is_not_found(endpoint, triton_exported):
    error = _refused(lambda: endpoint.check("segmentation", 99, "0" * 64))
    assert isinstance(error, NotFound) and status_code(error).name == "NOT_FOUND"
    assert "twinray export triton --models segmentation:99" in str(error)
    error = _refused(lambda: TritonModule(endpoint, "segmentation", 99, {})(torch.zeros(1, 1, 8, 8)))
    assert isinstance(error, NotFound)


def test_a_version_exported_from_other_weights_is_refused(endpoint, triton_store, triton_exported):
    version = ModelRegistry(triton_store).latest("segmentation")
    error = _refused(lambda: endpoint.check("segmentation", version, "0" * 64))
    assert isinstance(error, FailedPrecondition) and status_code(error).name == "FAILED_PRECONDITION"

"""Ray Train plumbing shared by every TwinRay model.

Starts (or joins) Ray, points Ray Train's checkpoints at the artifact store (a directory under the
local store, or the MinIO bucket through pyarrow's S3 filesystem), runs a `TorchTrainer`, and turns
the best checkpoint into a published model version.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.fs
import ray
import ray.train
import torch
from ray.train.torch import TorchTrainer

from twinray.shared.platform.config import Settings
from twinray.shared.platform.registry import ModelRegistry, ModelVersion

CHECKPOINT_FILE = "model.pt"


def checkpoint_storage(settings: Settings) -> tuple[str, pyarrow.fs.FileSystem | None]:
    """Where Ray Train persists checkpoints: inside the artifact store, whichever backend it is."""
    if not settings.store_endpoint:
        return str(settings.store_root / settings.store_bucket / "checkpoints"), None
    endpoint = settings.store_endpoint
    scheme = "https" if settings.store_secure or endpoint.startswith("https://") else "http"
    host = endpoint.split("://", 1)[-1]
    fs = pyarrow.fs.S3FileSystem(
        endpoint_override=host,
        scheme=scheme,
        access_key=settings.store_access_key or None,
        secret_key=settings.store_secret_key or None,
        region=settings.store_region or "us-east-1",
    )
    return f"{settings.store_bucket}/checkpoints", fs  # no s3:// prefix with an explicit filesystem


def fit(
    train_loop: Callable[[dict[str, Any]], None],
    *,
    loop_config: dict[str, Any],
    settings: Settings,
    run_name: str,
    workers: int,
    use_gpu: bool,
    score_metric: str,
) -> ray.train.Result:
    """Run `train_loop` on `workers` Ray Train workers (gloo on CPU, NCCL on GPU) and return the result.
    On CPU the workers share the CPUs free right now (Serve replicas may hold some)."""
    free_cpus = int(ray.available_resources().get("CPU", 1))
    cpus_per_worker = 1 if use_gpu else max(1, free_cpus // workers)
    storage_path, storage_fs = checkpoint_storage(settings)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={**loop_config, "settings_env": settings.as_env(), "threads": cpus_per_worker},
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=score_metric, checkpoint_score_order="max"
            ),
        ),
    )
    return trainer.fit()


def save_checkpoint(state: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Report `metrics` and, on rank 0, a checkpoint holding `state`; every worker must call it."""
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, Path(tmp) / CHECKPOINT_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def best_state(result: ray.train.Result, score_metric: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checkpointed state and metrics with the highest `score_metric`."""
    if result.error is not None:
        raise RuntimeError(f"training failed: {result.error}") from result.error
    candidates = result.best_checkpoints or ([(result.checkpoint, result.metrics)] if result.checkpoint else [])
    if not candidates:
        raise RuntimeError("training produced no checkpoint")
    checkpoint, metrics = max(candidates, key=lambda item: item[1].get(score_metric, float("-inf")))
    with checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    return state, dict(metrics)


def publish(
    registry: ModelRegistry,
    name: str,
    *,
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
    metrics: dict[str, Any],
    training: dict[str, Any],
    card: str,
) -> ModelVersion:
    """Publish trained weights as the next version of `name`."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return registry.publish(
        name,
        weights=buffer.getvalue(),
        config=config,
        metrics=metrics,
        training=training,
        card=card,
    )


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DistributedDataParallel wrapper."""
    return model.module if hasattr(model, "module") else model


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on GPUs (where it halves memory and time), a no-op on CPUs."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

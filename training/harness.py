"""The one harness every TwinRay trainer runs on: a `TrainSpec` says what is the model's own, and
`train_and_publish` does the rest the same way for all of them.

On the driver it prepares the config (inputs checked and versions resolved before Ray starts), starts
(or joins) Ray, points Ray Train's checkpoints at the artifact store (a directory under the local
store, or the MinIO bucket through pyarrow's S3 filesystem), runs a `TorchTrainer`, and publishes the
best checkpoint with its card. On each worker `worker_context` gives the loop its typed config, store,
device, rank and seeds (`derived_seed` of the config's `seed`, never ad-hoc arithmetic).
"""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import pyarrow.fs
import ray
import ray.train
import ray.train.torch
import torch
from ray.train.torch import TorchTrainer

from twinray.shared.data.dataset_io import derived_seed
from twinray.shared.platform.config import Settings
from twinray.shared.platform.ray_runtime import ensure_ray
from twinray.shared.platform.registry import ModelRegistry, ModelVersion
from twinray.shared.platform.storage import ArtifactStore, open_store
from twinray.training.config import TrainConfig

CHECKPOINT_FILE = "model.pt"
C = TypeVar("C", bound=TrainConfig)


@dataclasses.dataclass(frozen=True)
class Prepared(Generic[C]):
    """What a spec's `prepare` resolved on the driver before Ray starts."""

    config: C  # what the workers train with: versions and sizes resolved
    published_config: dict[str, Any] | None = None  # config.json; None = the model config's to_dict()
    training: dict[str, Any] = dataclasses.field(default_factory=dict)  # more training.json entries


@dataclasses.dataclass(frozen=True)
class Trained(Generic[C]):
    """A finished run, as the model card sees it."""

    prepared: Prepared[C]
    best_epoch: int
    metrics: dict[str, Any]  # the best checkpoint's
    summary: dict[str, float]  # the spec's post-training summary ({} without one)

    @property
    def config(self) -> C:
        return self.prepared.config


@dataclasses.dataclass(frozen=True)
class Flag:
    """An extra `twinray train <name>` option: `--real-count` sets the keyword `real_count` of the
    spec's `make_config`; its type is its default's."""

    option: str
    default: int | float | str
    help: str

    @property
    def keyword(self) -> str:
        return self.option.removeprefix("--").replace("-", "_")


@dataclasses.dataclass(frozen=True)
class TrainSpec(Generic[C]):
    """What is a trainer's own; `train_and_publish` and `twinray train <name>` need nothing else."""

    name: str  # the registry name, and the CLI's `twinray train <name>`
    help: str  # one line for `twinray train --help`
    config_class: type[C]
    score: str  # the metric the published checkpoint is chosen on (higher is better)
    loop: Callable[[dict[str, Any]], None]  # the Ray Train loop, run on every worker
    prepare: Callable[[ArtifactStore, C], Prepared[C]]  # on the driver, before Ray: check inputs, resolve
    card: Callable[[Trained[C]], str]  # the model card's text
    # After training, on the driver: what the published weights make, added to the metrics and the card.
    summary: Callable[[ArtifactStore, C, dict[str, Any]], dict[str, float]] | None = None
    configure: Callable[..., C] | None = None  # a config from keyword fields; None = config_class
    flags: tuple[Flag, ...] = ()  # its own CLI options, beyond the common ones

    def make_config(self, **fields: Any) -> C:
        """The config these fields (the CLI's, or none for the defaults) make."""
        return (self.configure or self.config_class)(**fields)


def train_and_publish(spec: TrainSpec[C], settings: Settings, config: C) -> ModelVersion:
    """Train `config` on Ray, publish the best checkpoint as the next version of `spec.name` and return it."""
    store = open_store(settings)
    prepared = spec.prepare(store, config)
    loop_config = prepared.config.to_dict()
    spec.config_class.from_dict(loop_config)  # what every worker does first: a bad config fails here, on the driver
    ensure_ray(settings)
    result = fit(
        spec.loop,
        loop_config=loop_config,
        settings=settings,
        run_name=f"{spec.name}-{int(time.time())}",
        workers=prepared.config.workers,
        use_gpu=prepared.config.use_gpu,
        score_metric=spec.score,
    )
    state, metrics = best_state(result, spec.score)
    summary = spec.summary(store, prepared.config, state["model"]) if spec.summary else {}
    card = spec.card(Trained(prepared, state["epoch"], metrics, summary))
    card += f"\nModel `{spec.name}`; checkpoint chosen on `{spec.score}` = {metrics.get(spec.score, float('nan')):.6g}.\n"
    return publish(
        ModelRegistry(store),
        spec.name,
        state_dict=state["model"],
        config=prepared.published_config or prepared.config.model.to_dict(),
        metrics={**{k: v for k, v in metrics.items() if isinstance(v, (int, float))}, **summary},
        training={**loop_config, **prepared.training, "best_epoch": state["epoch"], "ray_run": result.path},
        card=card,
    )


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
        train_loop_config={"config": loop_config, "settings_env": settings.as_env(), "threads": cpus_per_worker},
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


@dataclasses.dataclass(frozen=True)
class WorkerContext(Generic[C]):
    """What a training loop knows of its Ray Train worker."""

    config: C
    store: ArtifactStore
    device: torch.device
    rank: int
    world_size: int

    @property
    def is_rank0(self) -> bool:
        return self.rank == 0

    def shared_seed(self, kind: str, index: int = 0) -> int:
        """The seed of draw `index` of `kind` (e.g. one epoch's permutation), the same on every rank."""
        return derived_seed(self.config.seed, "train", kind, index)  # type: ignore[attr-defined]

    def rank_seed(self, kind: str) -> int:
        """This rank's own seed for `kind` (e.g. initial weights, its batch draws)."""
        return derived_seed(self.config.seed, "train", f"{kind}/rank", self.rank)  # type: ignore[attr-defined]

    def rank_generator(self, kind: str) -> torch.Generator:
        return torch.Generator().manual_seed(self.rank_seed(kind))


def worker_context(loop_config: dict[str, Any], config_class: type[C]) -> WorkerContext[C]:
    """The first call of every training loop: its typed config, and torch threads capped at the
    machine's cores (Ray may count more CPUs than there are, and more threads than cores stall torch)."""
    config = config_class.from_dict(loop_config["config"])
    torch.set_num_threads(min(loop_config["threads"], os.cpu_count() or 1))
    context = ray.train.get_context()
    return WorkerContext(
        config=config,
        store=open_store(Settings.from_env(loop_config["settings_env"])),
        device=ray.train.torch.get_device(),
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
    )


def save_checkpoint(weights: dict[str, Any], epoch: int, metrics: dict[str, Any]) -> None:
    """Report `metrics` and, on rank 0, a checkpoint of `weights` (what would be published) at `epoch`;
    every worker must call it."""
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"model": weights, "epoch": epoch}, Path(tmp) / CHECKPOINT_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def best_state(result: ray.train.Result, score_metric: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checkpointed state ({"model": weights, "epoch": n}) and metrics with the highest `score_metric`."""
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

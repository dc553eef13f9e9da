"""Defect generation speed: samples per second of the mask DDPM (of `mask_blend`, approach A of the
original work) and of the conditioned DDPM (`conditioned_ddpm`, approach B: the frozen normal-manifold
UNet steered by the defect encoder, inpainting inside a mask) at 64 and 128 px, DDPM-1000 versus
DDIM-50, mask_blend's blending for contrast, and a GenerateDataset job (conditioned_ddpm) over Ray
Serve gRPC versus the same servicer in-process.

Every cell runs the project's own samplers (`twinray.shared.models.components.diffusion.sample`,
`twinray.shared.models.defect_encoder.network.inpaint_defect`, `twinray.shared.synthesis.defects.synthesize_mask_blend`) on the
production architectures (`twinray.shared.models.components.diffusion.ARCHITECTURES`, default `DefectEncoderConfig`) at the
benchmark's image size, with untrained weights: speed does not depend on them. The ratio of each
pair is measured in the same run. DDPM runs `--ddpm-steps` of its reverse steps and is scaled to all
1000: a step costs the same whatever T is (one network call + one scheduler step), and 1000 steps at
128 px take tens of minutes on 2 CPU cores. On a GPU pass `--ddpm-steps 1000` (the default there) to
time the whole chain (the service part stays on CPU: the servicer loads its models there). Run:
`make benchmark` or `.venv/bin/python -m benchmarks.defect_generation [--device cuda] [--bf16]
[--threads 1] [--quick] [--no-service]`. Writes benchmarks/reports/defect_generation.{json,md}
(defect_generation_cuda[_bf16] on a GPU, so the CPU report stays).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks.common import publish_untrained, ratio, scratch_settings
from benchmarks.report import machine, write_report
from twinray.shared.data.products.dataset import render_sample, write_product_dataset
from twinray.shared.data.products.defects import DEFECT_KINDS
from twinray.shared.models.components.diffusion import ARCHITECTURES, DiffusionConfig, Sampler, build_unet, sample
from twinray.shared.models.defect_encoder.network import DefectEncoder, DefectEncoderConfig, inpaint_defect
from twinray.shared.platform.storage import open_store
from twinray.shared.synthesis.defects import real_appearances, synthesize_mask_blend

CATEGORY = "metal"
DEFAULT_BATCH = {64: 4, 128: 2}  # small: DDPM on 2 CPU cores
MODELS = {
    "mask": "mask DDPM (mask_blend)",
    "conditioned": "conditioned DDPM (conditioned_ddpm)",
    "blend": "blending (mask_blend)",
    "job": "GenerateDataset job (conditioned_ddpm)",
}
NORMALS = "bench-normals"  # the product dataset whose normal surfaces the dataset jobs draw on
TIMESTEPS = ARCHITECTURES["mask"].train_timesteps  # both DDPMs train with the same schedule


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="run the networks under bf16 autocast")
    parser.add_argument("--sizes", type=int, nargs="+", help="image sides in pixels (default 64 128; --quick: 32)")
    parser.add_argument("--batch", type=int, default=0, help="images per sampling call (0: 4 at 64 px, 2 at 128 px)")
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument(
        "--ddpm-steps", type=int, default=0, help="DDPM reverse steps timed, scaled to all 1000 (0: all on cuda, 100 on cpu)"
    )
    parser.add_argument("--blend-samples", type=int, default=32, help="defects blended for mask_blend's cost")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: torch's default); 1 is far faster than 2 when other jobs share the cores",
    )
    parser.add_argument(
        "--service",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure a GenerateDataset job over Ray Serve gRPC against the in-process servicer",
    )
    parser.add_argument("--service-size", type=int, help="image side of the published models (default 64; --quick: 32)")
    parser.add_argument("--service-samples", type=int, default=6, help="samples in each timed dataset job")
    parser.add_argument("--quick", action="store_true", help="smoke test: batch 1, 2 steps a sampler, 2 samples a job")
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    if args.quick:
        args.batch, args.ddim_steps, args.ddpm_steps, args.blend_samples, args.service_samples = 1, 2, 2, 2, 2
    args.sizes = args.sizes or ([32] if args.quick else [64, 128])
    args.service_size = args.service_size or (32 if args.quick else 64)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.ddpm_steps:
        args.ddpm_steps = TIMESTEPS if args.device.type == "cuda" else 100
    return args


def peak_memory_mb(device: torch.device) -> float:
    """GPU: peak allocated since the cell started; CPU: the process's peak RSS so far (a high-water
    mark over the whole run, so only its growth between cells means anything)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def significant(value: float) -> float:
    """Four significant digits: blending takes well under a millisecond, DDPM minutes."""
    return float(f"{value:.4g}")


def timed(run: Callable[[], Any], samples: int, device: torch.device, *, scale: float = 1.0) -> dict[str, Any]:
    """Wall time of `run` (which makes `samples` samples), times `scale`, per sample; on CPU also this
    process's CPU time, which other jobs on the same cores disturb far less than the wall time."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) * scale / samples
    cpu_seconds = (time.process_time() - start_cpu) * scale / samples
    return {
        "samples": samples,
        "s_per_sample": significant(seconds),
        "samples_per_s": significant(1.0 / seconds),
        "cpu_s_per_sample": significant(cpu_seconds) if device.type == "cpu" else "-",
        "peak_memory_mb": peak_memory_mb(device),
    }


def products(size: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normal surfaces, defect images, their masks), `count` of each at `size`: the synthetic
    products the models would be trained on."""
    normals = [render_sample(CATEGORY, size, 1000 + i, None, -1)[0] for i in range(count)]
    defects = [render_sample(CATEGORY, size, i, DEFECT_KINDS[i % len(DEFECT_KINDS)], i) for i in range(count)]
    return np.stack(normals), np.stack([d[0] for d in defects]), np.stack([d[1] for d in defects])


def schedule(config: DiffusionConfig, sampler: Sampler, args: argparse.Namespace) -> tuple[DiffusionConfig, int | None, float]:
    """(config to sample with, steps argument, scale to the full chain): DDPM runs `--ddpm-steps` of
    the train timesteps (a shorter schedule with the same network), DDIM its `--ddim-steps`."""
    if sampler == "ddim":
        return config, args.ddim_steps, 1.0
    return dataclasses.replace(config, train_timesteps=args.ddpm_steps), None, config.train_timesteps / args.ddpm_steps


def sampling_speed(args: argparse.Namespace, size: int) -> dict[str, dict[str, Any]]:
    """Mask DDPM and conditioned DDPM at `size`, each with DDPM and DDIM; mask_blend's blending."""
    device, batch = args.device, args.batch or DEFAULT_BATCH.get(size, 2)
    mask_config, image_config = (dataclasses.replace(ARCHITECTURES[target], image_size=size) for target in ("mask", "image"))
    torch.manual_seed(0)
    mask_unet, normal_unet = build_unet(mask_config).to(device).eval(), build_unet(image_config).to(device).eval()
    encoder = DefectEncoder(DefectEncoderConfig(), image_config).to(device).eval()
    normals, defect_images, masks = products(size, batch)
    normal = torch.from_numpy(normals).float()[:, None].to(device)
    mask = torch.from_numpy(masks).float()[:, None].to(device)
    draw = {
        "mask": (mask_config, lambda c, steps, sampler: sample(mask_unet, c, batch, steps=steps, sampler=sampler)),
        "conditioned": (
            image_config,
            lambda c, steps, sampler: inpaint_defect(normal_unet, encoder, c, normal, mask, steps=steps, sampler=sampler),
        ),
    }
    results = {}
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
        for model, (config, run) in draw.items():
            run(dataclasses.replace(config, train_timesteps=2), None, "ddpm")  # warm-up: allocator, kernels
            for sampler in ("ddpm", "ddim"):
                used, steps, scale = schedule(config, sampler, args)
                results[f"{model}/{sampler}"] = {
                    **timed(lambda: run(used, steps, sampler), batch, device, scale=scale),  # noqa: B023 - called here
                    "steps_timed": steps or used.train_timesteps,
                }
    appearances = real_appearances(defect_images, masks)  # once per model load in the service: not timed
    count = args.blend_samples
    picks = np.arange(count) % batch
    results["blend/-"] = {
        **timed(lambda: synthesize_mask_blend(normals, masks[picks], picks, appearances), count, device),
        "steps_timed": 0,
    }
    return results


def publish_generators(size: int) -> dict[str, int]:
    """Scratch settings with the three models the service loads published, untrained, at `size`: the
    mask DDPM, the normal-manifold DDPM and the encoder steering that version (as the trainers name them)."""
    settings = scratch_settings()
    configs = {
        name: dataclasses.replace(ARCHITECTURES[target], image_size=size)
        for name, target in (("defect-masks", "mask"), ("normal-manifold", "image"))
    }
    torch.manual_seed(0)
    versions = {
        name: publish_untrained(settings, name, build_unet(config), config.to_dict()).version for name, config in configs.items()
    }
    encoder_config = {
        "encoder": DefectEncoderConfig().to_dict(),
        "unet": configs["normal-manifold"].to_dict(),
        "normal_manifold_version": versions["normal-manifold"],
    }
    encoder = DefectEncoder(DefectEncoderConfig(), configs["normal-manifold"])
    versions["defect-encoder"] = publish_untrained(settings, "defect-encoder", encoder, encoder_config).version
    write_product_dataset(
        open_store(settings), NORMALS, category=CATEGORY, size=size, splits={"train_normal": 8}, seed=0, progress=False
    )
    return versions


def job_request(name: str, count: int, steps: int) -> Any:
    """conditioned_ddpm drawing on the benchmark's normal surfaces, DDIM with `steps` (a GenerateDatasetRequest)."""
    from twinray.v1 import defect_generation_pb2 as pb

    return pb.GenerateDatasetRequest(
        name=name,
        count=count,
        method=pb.DEFECT_METHOD_CONDITIONED_DDPM,
        normal_dataset=NORMALS,
        sampling=pb.SamplingOptions(steps=steps, seed=1),
    )


def dataset_job_throughput(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Samples/s of one GenerateDataset job over Ray Serve gRPC ("grpc+serve") and through the same
    servicer in-process ("in-process"). Each path first runs a one-sample job, so the lazy model load
    is not timed; every job has its own name (a finished one would only be read back)."""
    import grpc

    from twinray.services.cli.up import deploy
    from twinray.services.defect_generation.client import APPLICATION, generate_dataset
    from twinray.services.defect_generation.servicer import DefectGenerationServicer
    from twinray.shared.platform.config import Settings
    from twinray.v1 import defect_generation_pb2 as pb

    versions = publish_generators(args.service_size)
    settings = Settings.from_env()
    servicer = DefectGenerationServicer(settings)
    deploy(settings, only=[APPLICATION])
    channel = grpc.insecure_channel(f"127.0.0.1:{settings.grpc_port}")

    async def drain(request: pb.GenerateDatasetRequest) -> list[pb.GenerateDatasetProgress]:
        return [message async for message in servicer.generate_dataset(request)]

    paths: dict[str, Callable[[pb.GenerateDatasetRequest], list[pb.GenerateDatasetProgress]]] = {
        "in-process": lambda request: asyncio.run(drain(request)),
        "grpc+serve": lambda request: list(generate_dataset(channel, request)),
    }
    results = {}
    for path, run in paths.items():
        slug = path.replace("+", "-")
        run(job_request(f"warm-up-{slug}", 1, args.ddim_steps))
        timed_job = job_request(f"bench-{slug}", args.service_samples, args.ddim_steps)
        messages: list[pb.GenerateDatasetProgress] = []
        stats = timed(lambda: messages.extend(run(timed_job)), args.service_samples, torch.device("cpu"))  # noqa: B023 - called here
        last, expected = messages[-1], {(name, str(version)) for name, version in versions.items()}
        assert last.HasField("manifest") and last.done == args.service_samples, f"{path}: last message {last}"
        assert {(m.name, m.version) for m in last.provenance.models} == expected, f"{path}: {last.provenance}"
        if path == "grpc+serve":
            stats["cpu_s_per_sample"] = stats["peak_memory_mb"] = "-"  # the replica's, not the client's
        results[path] = {**stats, "steps_timed": args.ddim_steps}
    return results


def sampling_ratios(results: dict[str, dict[str, Any]], size: int, measure: str = "s_per_sample") -> dict[str, float]:
    """Ratios of seconds per sample at `size` (higher = the first is slower), of wall or CPU time."""

    def seconds(key: str) -> float:
        return results[f"{key}@{size}"][measure]

    return {
        "ddim_speedup_mask": ratio(seconds("mask/ddpm"), seconds("mask/ddim")),
        "ddim_speedup_conditioned": ratio(seconds("conditioned/ddpm"), seconds("conditioned/ddim")),
        "conditioned_over_mask_ddim": ratio(seconds("conditioned/ddim"), seconds("mask/ddim")),
        "mask_ddim_over_blend": ratio(seconds("mask/ddim"), seconds("blend/-")),
    }


def ratio_notes(args: argparse.Namespace, ratios: dict[str, Any]) -> str:
    """The markdown under the results table: what was measured, and the ratios."""
    lines = [
        "| size | DDIM speed-up, mask | DDIM speed-up, conditioned | conditioned / mask (DDIM) | mask (DDIM) / blend |",
        "|---|---|---|---|---|",
    ]
    for time_kind in ("sampling", "sampling_cpu_time"):
        for size, r in ratios.get(time_kind, {}).items():
            label = f"{size.removeprefix('size_')}{', CPU time' if time_kind.endswith('cpu_time') else ''}"
            lines.append(
                f"| {label} | x{r['ddim_speedup_mask']} | x{r['ddim_speedup_conditioned']} | "
                f"x{r['conditioned_over_mask_ddim']} | x{r['mask_ddim_over_blend']} |"
            )
    if "dataset_job" in ratios:
        job = ratios["dataset_job"]["grpc_over_inprocess"]
        lines.append(f"\nGenerateDataset throughput (samples/s), gRPC through Ray Serve / in-process: x{job}")
    device = f"{args.device}{' (bf16 autocast)' if args.bf16 else ''}, {torch.get_num_threads()} torch thread(s)"
    return (
        f"Untrained weights of the production architecture on {device}. DDPM timed over {args.ddpm_steps} reverse "
        f"steps and scaled to {TIMESTEPS}. Peak memory: GPU peak allocated per cell, or the "
        "process's peak RSS so far on CPU. Ratios of seconds per sample (higher = the first is slower), of wall time "
        "and, on CPU, of this process's CPU time (steadier when other jobs share the cores):\n\n" + "\n".join(lines)
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure, write the report, return it."""
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    samplers = {"ddpm": f"DDPM-{TIMESTEPS}", "ddim": f"DDIM-{args.ddim_steps}", "-": "-"}
    results, rows = {}, []
    for size in args.sizes:
        for key, stats in sampling_speed(args, size).items():
            model, sampler = key.split("/")
            results[f"{key}@{size}"] = stats
            rows.append({"model": MODELS[model], "size": size, "sampler": samplers[sampler], **stats})
            print(rows[-1], flush=True)
    ratios: dict[str, Any] = {"sampling": {f"size_{size}": sampling_ratios(results, size) for size in args.sizes}}
    if args.device.type == "cpu":
        ratios["sampling_cpu_time"] = {f"size_{size}": sampling_ratios(results, size, "cpu_s_per_sample") for size in args.sizes}
    if args.service:
        jobs = dataset_job_throughput(args)
        for path, stats in jobs.items():
            results[f"job/{path}@{args.service_size}"] = stats
            rows.append({"model": f"{MODELS['job']}, {path}", "size": args.service_size, "sampler": samplers["ddim"], **stats})
            print(rows[-1], flush=True)
        over_grpc, in_process = jobs["grpc+serve"]["samples_per_s"], jobs["in-process"]["samples_per_s"]
        ratios["dataset_job"] = {"grpc_over_inprocess": ratio(over_grpc, in_process)}
    service = {
        "size": args.service_size,
        "samples_per_job": args.service_samples,
        "method": "conditioned_ddpm",
        "replicas": 1,
        "normals": f"{NORMALS}/train_normal (8 {CATEGORY} surfaces)",
        "models_on": "cpu (the servicer loads them there)",
    }
    report = {
        "benchmark": "defect_generation",
        "weights": "untrained (speed does not depend on them)",
        "model": {
            **{f"{target}_unet": {**config.to_dict(), "image_size": "per size"} for target, config in ARCHITECTURES.items()},
            "encoder": DefectEncoderConfig().to_dict(),
        },
        "settings": {
            "device": str(args.device),
            "bf16_autocast": args.bf16,
            "torch_threads": torch.get_num_threads(),
            "ddim_steps": args.ddim_steps,
            "ddpm_steps_timed": args.ddpm_steps,
            "ddpm_scaled_to": TIMESTEPS,
            "batch": {size: args.batch or DEFAULT_BATCH.get(size, 2) for size in args.sizes},
            "blend_samples": args.blend_samples,
            "category": CATEGORY,
            "quick": args.quick,
            "service": service if args.service else None,
        },
        "machine": {**machine(), "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]},
        "results": results,
        "ratios": ratios,
    }
    notes = ratio_notes(args, ratios)
    name = "defect_generation" + ("" if args.device.type == "cpu" else f"_{args.device.type}{'_bf16' if args.bf16 else ''}")
    print(write_report(name, report, rows, notes))
    print(notes)
    return report


if __name__ == "__main__":
    main()

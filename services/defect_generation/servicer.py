"""The DefectGeneration RPCs as plain Python (no Ray): mask sampling, one synthetic defect, and
resumable dataset generation into the artifact store.

The torch work is synchronous; every RPC runs it in a worker thread (`asyncio.to_thread`), so a long
dataset stream never blocks the replica's event loop, and a stream closed by its caller (an
in-process caller, or Serve when it cancels a request) stops after the sample being drawn.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterable

import numpy as np

from twinray.services.common.image_input import decode_image_message
from twinray.services.common.triton_runner import triton_runner
from twinray.services.defect_generation import dataset
from twinray.services.defect_generation.drawing import (
    check_seed,
    check_side,
    ddim_steps,
    draw,
    mask_from_message,
    method_of,
    sampled_masks,
    seed_of,
    square_side,
)
from twinray.services.defect_generation.model_cache import ENCODER, MASKS, NORMAL, GeneratorCache, Versions, provenance_models
from twinray.services.defect_generation.triton_unet import TritonUNet
from twinray.shared.data.dataset_io import check_name, commit_manifest, manifest_key
from twinray.shared.data.products.dataset import read_product_manifest, read_product_split
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.imaging import ImageLimits, encode_float01_png16, encode_label_png
from twinray.shared.platform.imaging.unit_range import to_unit
from twinray.shared.platform.storage import open_store
from twinray.shared.platform.storage.base import ArtifactRef, sha256_bytes
from twinray.shared.platform.telemetry import current_trace_id, server_span
from twinray.shared.synthesis.defects import DefectGenerators
from twinray.v1 import common_pb2
from twinray.v1 import defect_generation_pb2 as pb

MAX_MASKS = 64
MAX_DATASET = 100_000
NORMAL_SPLIT = "train_normal"


def mask_message(mask: np.ndarray) -> common_pb2.Mask:
    height, width = mask.shape
    return common_pb2.Mask(height=height, width=width, png=encode_label_png(mask.astype(np.uint8) * 255))


def artifact_message(ref: ArtifactRef) -> common_pb2.ArtifactRef:
    return common_pb2.ArtifactRef(bucket=ref.bucket, key=ref.key, version=ref.version, sha256=ref.sha256)


def same_job(stored: dict, spec: dict) -> dict:
    """`spec` when it equals the stored job's; InvalidInput naming what differs (never overwrite a dataset)."""
    if differ := [f"{key} {stored[key]!r} (asked {spec[key]!r})" for key in dataset.JOB_KEYS if stored[key] != spec[key]]:
        raise InvalidInput(
            f"dataset {stored['name']!r} exists with other parameters: {', '.join(differ)}; choose another name or delete it"
        )
    return spec


@dataclasses.dataclass(frozen=True)
class Job:
    """A dataset job ready to run: its spec (as stored in job.json), generators and normal images."""

    spec: dict
    generators: DefectGenerators | None  # None for a finished job (nothing left to draw)
    normals: np.ndarray | None  # uint16 (N,S,S): the normal dataset's train_normal split; None = sample them

    def provenance(self, seed: int) -> common_pb2.Provenance:
        return common_pb2.Provenance(models=provenance_models(self.spec["models"]), seed=seed, trace_id=current_trace_id())


class DefectGenerationServicer:
    def __init__(
        self,
        settings: Settings,
        *,
        masks_version: str = "latest",
        normal_version: str = "latest",
        encoder_version: str = "latest",
    ) -> None:
        self.store = open_store(settings)
        self.limits = ImageLimits.from_settings(settings)
        pinned = {MASKS: masks_version, NORMAL: normal_version, ENCODER: encoder_version}
        self.models = GeneratorCache(self.store, pinned=pinned, runner=triton_runner(settings, TritonUNet))

    # --- SampleMasks -------------------------------------------------------------------------------

    async def sample_masks(
        self, request: pb.SampleMasksRequest, metadata: Iterable[tuple[str, str]] = ()
    ) -> pb.SampleMasksResponse:
        with server_span("twinray.v1.DefectGeneration/SampleMasks", metadata):
            if not 1 <= request.count <= MAX_MASKS:
                raise InvalidInput(f"count is {request.count}; ask for 1..{MAX_MASKS} masks")
            if request.size:
                check_side(request.size, "size")
            seed = seed_of(request.sampling)
            versions = self.models.resolve(pb.DefectModels(masks=request.model))
            return await asyncio.to_thread(self._sample_masks, request, versions, seed)

    def _sample_masks(self, request: pb.SampleMasksRequest, versions: Versions, seed: int) -> pb.SampleMasksResponse:
        generators = self.models.get(versions)
        steps = ddim_steps(request.sampling.steps, generators.mask_config, "defect-masks")
        masks = sampled_masks(generators, request.count, request.size or generators.mask_config.image_size, seed, steps)
        return pb.SampleMasksResponse(
            masks=[mask_message(mask) for mask in masks],
            provenance=common_pb2.Provenance(
                models=provenance_models(versions, (MASKS,)), seed=seed, trace_id=current_trace_id()
            ),
        )

    # --- Synthesize --------------------------------------------------------------------------------

    async def synthesize(
        self, request: pb.SynthesizeDefectRequest, metadata: Iterable[tuple[str, str]] = ()
    ) -> pb.SynthesizeDefectResponse:
        with server_span("twinray.v1.DefectGeneration/Synthesize", metadata):
            method = method_of(request.method)
            seed = seed_of(request.sampling)
            normal = None
            if request.HasField("normal_image"):
                normal = decode_image_message(request.normal_image, self.limits, self.store).pixels
                square_side(normal, "normal image")
            versions = self.models.resolve(request.models)
            return await asyncio.to_thread(self._synthesize, request, method, seed, normal, versions)

    def _synthesize(
        self, request: pb.SynthesizeDefectRequest, method: str, seed: int, normal: np.ndarray | None, versions: Versions
    ) -> pb.SynthesizeDefectResponse:
        generators = self.models.get(versions)
        mask = None
        if request.HasField("mask"):
            side = len(normal) if normal is not None else generators.normal_config.image_size
            mask = mask_from_message(request.mask, side, self.limits)
        drawn = draw(generators, method, seed, request.sampling.steps, normal=normal, mask=mask)
        return pb.SynthesizeDefectResponse(
            image_png=encode_float01_png16(drawn.image),
            mask=mask_message(drawn.mask),
            normal_png=encode_float01_png16(drawn.normal),
            provenance=common_pb2.Provenance(models=provenance_models(versions), seed=seed, trace_id=current_trace_id()),
        )

    # --- GenerateDataset ---------------------------------------------------------------------------

    async def generate_dataset(
        self, request: pb.GenerateDatasetRequest, metadata: Iterable[tuple[str, str]] = ()
    ) -> AsyncIterator[pb.GenerateDatasetProgress]:
        """First message: samples already stored whole; then one per stored sample; last: the manifest."""
        with server_span("twinray.v1.DefectGeneration/GenerateDataset", metadata):
            job = await asyncio.to_thread(self._job, request)
            count, seed = job.spec["count"], job.spec["seed"]
            if job.generators is None:  # finished: the manifest is the answer
                yield pb.GenerateDatasetProgress(done=count, total=count, provenance=job.provenance(seed))
                yield await asyncio.to_thread(self._manifest_message, job)
                return
            refs = await asyncio.to_thread(self._stored_samples, job)
            done = sum(ref is not None for ref in refs)
            yield pb.GenerateDatasetProgress(done=done, total=count, provenance=job.provenance(seed))
            for index, ref in enumerate(refs):
                if ref is None:
                    refs[index] = await asyncio.to_thread(self._store_sample, job, index)
                    done += 1
                    yield pb.GenerateDatasetProgress(
                        done=done,
                        total=count,
                        sample=artifact_message(refs[index]),
                        provenance=job.provenance(dataset.sample_seed(seed, index)),
                    )
            yield await asyncio.to_thread(self._commit, job, refs)

    def _job(self, request: pb.GenerateDatasetRequest) -> Job:
        """Check the request against the stored job of that name (if any), write the job spec if new."""
        name = check_name(request.name)
        if not 1 <= request.count <= MAX_DATASET:
            raise InvalidInput(f"count is {request.count}; a dataset holds 1..{MAX_DATASET} samples")
        method = method_of(request.method)
        check_seed(request.sampling.seed)
        stored = dataset.read_job(self.store, name)
        versions = self.models.resolve(request.models, stored["models"] if stored else None)
        if stored and self.store.exists(manifest_key(name)):  # finished: only check what the request sets
            explicit = {"seed": request.sampling.seed or stored["seed"], "steps": request.sampling.steps or stored["steps"]}
            given = {"count": request.count, "method": method, "normal_dataset": request.normal_dataset, "models": versions}
            return Job(same_job(stored, {**stored, **explicit, **given}), None, None)
        generators = self.models.get(versions)
        normals = None
        if request.normal_dataset:
            read_product_manifest(self.store, request.normal_dataset)  # NotFound names the dataset
            normals = read_product_split(self.store, request.normal_dataset, NORMAL_SPLIT).image
            check_side(normals.shape[-1], f"normal dataset {request.normal_dataset!r}'s image side")
        size = normals.shape[-1] if normals is not None else generators.normal_config.image_size
        steps = request.sampling.steps or (stored["steps"] if stored else 0)
        if method == "conditioned_ddpm" or normals is None:
            steps = ddim_steps(steps, generators.normal_config, NORMAL)
        steps = ddim_steps(steps, generators.mask_config, MASKS)
        spec = {
            "format": dataset.DATASET_FORMAT,
            "name": name,
            "count": request.count,
            "method": method,
            "seed": request.sampling.seed or (stored["seed"] if stored else seed_of(request.sampling)),
            "steps": steps,
            "normal_dataset": request.normal_dataset,
            "size": size,
            "models": versions,
        }
        if stored is None:
            self.store.put_bytes(dataset.job_key(name), dataset.job_bytes(spec), content_type="application/json")
        return Job(same_job(stored, spec) if stored else spec, generators, normals)

    def _stored_samples(self, job: Job) -> list[ArtifactRef | None]:
        """Each sample's ref when it is stored whole, else None (to generate)."""
        name, seed, size = job.spec["name"], job.spec["seed"], job.spec["size"]
        return [dataset.stored_sample(self.store, name, i, dataset.sample_seed(seed, i), size) for i in range(job.spec["count"])]

    def _store_sample(self, job: Job, index: int) -> ArtifactRef:
        """Draw sample `index` from its own seed (and normal pick) and store it."""
        seed = dataset.sample_seed(job.spec["seed"], index)
        pick = dataset.normal_pick(seed, len(job.normals)) if job.normals is not None else -1
        normal = to_unit(job.normals[pick]) if job.normals is not None else None
        drawn = draw(job.generators, job.spec["method"], seed, job.spec["steps"], normal=normal, mask=None)
        data = dataset.sample_bytes(drawn.image, drawn.mask, drawn.normal, seed, pick)
        return self.store.put_bytes(dataset.sample_key(job.spec["name"], index), data)

    def _commit(self, job: Job, refs: list[ArtifactRef]) -> pb.GenerateDatasetProgress:
        """Write the manifest of the whole, verified samples `refs` (last), and answer with it."""
        commit_manifest(self.store, job.spec["name"], dataset.manifest_for(job.spec, refs), "generated defect dataset")
        return self._manifest_message(job)

    def _manifest_message(self, job: Job) -> pb.GenerateDatasetProgress:
        manifest = dataset.read_generated_manifest(self.store, job.spec["name"])
        key = manifest_key(job.spec["name"])
        ref = common_pb2.ArtifactRef(bucket=self.store.bucket, key=key, sha256=sha256_bytes(self.store.get_bytes(key)))
        count = manifest["count"]
        return pb.GenerateDatasetProgress(done=count, total=count, manifest=ref, provenance=job.provenance(job.spec["seed"]))

"""The DefectGeneration RPCs in-process (no Serve) with the session's DDPMs trained on Ray: masks,
mask_blend and conditioned_ddpm, and dataset jobs that resume bit for bit; plus conditioned_ddpm steered by a published
encoder, and the errors that need a store of their own (no Ray)."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
import torch

from twinray.services.defect_generation.dataset import read_generated_dataset, sample_key, sample_seed
from twinray.services.defect_generation.servicer import DefectGenerationServicer
from twinray.shared.data.products.dataset import read_product_split
from twinray.shared.models.defect_encoder.network import DefectEncoder, DefectEncoderConfig
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import FailedPrecondition, InvalidInput, NotFound
from twinray.shared.platform.imaging import decode_label_png, decode_png, encode_label_png, encode_png_u16
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import open_store
from twinray.v1 import common_pb2
from twinray.v1 import defect_generation_pb2 as pb

MASK_BLEND, CONDITIONED_DDPM = pb.DEFECT_METHOD_MASK_BLEND, pb.DEFECT_METHOD_CONDITIONED_DDPM


@pytest.fixture(scope="module")
def servicer(trained_mask_ddpm, trained_normal_manifold, twinray_settings) -> DefectGenerationServicer:
    return DefectGenerationServicer(twinray_settings)


@pytest.fixture(scope="module")
def normal_u16(twinray_settings, product_dataset) -> np.ndarray:
    """A real 32 px normal surface of the session's product dataset."""
    return read_product_split(open_store(twinray_settings), product_dataset, "test_normal").image[0]


def square_mask(side: int, start: int, stop: int) -> np.ndarray:
    mask = np.zeros((side, side), bool)
    mask[start:stop, start:stop] = True
    return mask


def mask_png(mask: np.ndarray) -> common_pb2.Mask:
    return common_pb2.Mask(height=mask.shape[0], width=mask.shape[1], png=encode_label_png(mask.astype(np.uint8) * 255))


def stream(servicer: DefectGenerationServicer, request: pb.GenerateDatasetRequest, stop_after: int = 0) -> list:
    """The progress messages of a job; with `stop_after`, the client walks away after that many."""

    async def collect() -> list:
        messages, progress = [], servicer.generate_dataset(request)
        async for message in progress:
            messages.append(message)
            if len(messages) == stop_after:
                await progress.aclose()
                break
        return messages

    return asyncio.run(collect())


def check_answer(answer: pb.SynthesizeDefectResponse, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, normal, mask) of an answer, after checking the promise: equal outside the mask."""
    image, normal = decode_png(answer.image_png), decode_png(answer.normal_png)
    mask = decode_label_png(answer.mask.png) == 255
    assert image.bits_stored == normal.bits_stored == 16
    assert image.pixels.shape == normal.pixels.shape == mask.shape == (side, side) and mask.any()
    np.testing.assert_array_equal(image.pixels[~mask], normal.pixels[~mask])
    return image.pixels, normal.pixels, mask


def test_sample_masks_are_binary_reproducible_and_name_model_and_seed(servicer, trained_mask_ddpm):
    request = pb.SampleMasksRequest(count=3, size=24, sampling=pb.SamplingOptions(steps=3, seed=5))
    answer = asyncio.run(servicer.sample_masks(request))
    masks = [decode_label_png(m.png) for m in answer.masks]
    assert [(m.height, m.width) for m in answer.masks] == [(24, 24)] * 3
    assert all(set(np.unique(m)) <= {0, 255} and (m == 255).any() for m in masks)
    assert [(m.name, m.version) for m in answer.provenance.models] == [("defect-masks", str(trained_mask_ddpm.version))]
    assert answer.provenance.seed == 5
    assert asyncio.run(servicer.sample_masks(request)).masks == answer.masks
    picked = asyncio.run(servicer.sample_masks(pb.SampleMasksRequest(count=1, sampling=pb.SamplingOptions(steps=2))))
    assert picked.provenance.seed > 0 and picked.masks[0].height == 16  # the model's own size


def test_mask_blend_blends_inside_the_callers_mask_only(servicer, normal_u16):
    mask = square_mask(32, 10, 20)
    request = pb.SynthesizeDefectRequest(
        method=MASK_BLEND,
        normal_image=common_pb2.Image(png=encode_png_u16(normal_u16)),
        mask=mask_png(mask),
        sampling=pb.SamplingOptions(seed=9),
    )
    answer = asyncio.run(servicer.synthesize(request))
    image, normal, returned_mask = check_answer(answer, 32)
    np.testing.assert_array_equal(returned_mask, mask)
    np.testing.assert_array_equal(normal, normal_u16 / np.float32(65535))  # the caller's image, lossless
    assert not np.array_equal(image[mask], normal[mask])
    assert {m.name for m in answer.provenance.models} >= {"defect-masks", "normal-manifold"}
    assert answer.provenance.seed == 9


def test_conditioned_ddpm_samples_normal_and_mask_when_none_is_given_and_a_seed_reproduces_it(servicer):
    request = pb.SynthesizeDefectRequest(method=CONDITIONED_DDPM, sampling=pb.SamplingOptions(steps=3, seed=21))
    answer = asyncio.run(servicer.synthesize(request))
    check_answer(answer, 16)  # the normal-manifold's size
    again = asyncio.run(servicer.synthesize(request))
    assert (again.image_png, again.mask.png, again.normal_png) == (answer.image_png, answer.mask.png, answer.normal_png)


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        (dict(), "method is unset"),
        (
            dict(method=MASK_BLEND, sampling=pb.SamplingOptions(steps=51)),
            "steps 51 is out of range: the normal-manifold DDPM takes 1..50",
        ),
        (dict(method=MASK_BLEND, sampling=pb.SamplingOptions(seed=2**63)), "seed 9223372036854775808 is too large"),
        (dict(method=CONDITIONED_DDPM, mask=mask_png(square_mask(24, 2, 5))), "mask is 24x24 but the normal image is 16x16"),
    ],
)
def test_bad_synthesize_requests_say_what_to_fix(servicer, request_fields, message):
    with pytest.raises(InvalidInput, match=message):
        asyncio.run(servicer.synthesize(pb.SynthesizeDefectRequest(**request_fields)))


def _job(name: str, count: int = 5, **fields) -> pb.GenerateDatasetRequest:
    sampling = pb.SamplingOptions(steps=2, seed=fields.pop("seed", 77))
    return pb.GenerateDatasetRequest(name=name, count=count, method=fields.pop("method", MASK_BLEND), sampling=sampling, **fields)


def test_an_interrupted_job_resumes_to_the_uninterrupted_jobs_samples_and_repairs_a_broken_one(servicer, twinray_settings):
    store = open_store(twinray_settings)
    whole = stream(servicer, _job("inproc-whole"))
    assert [(m.done, m.total) for m in whole] == [(0, 5), (1, 5), (2, 5), (3, 5), (4, 5), (5, 5), (5, 5)]
    assert whole[-1].manifest.key == "datasets/inproc-whole/manifest.json" and whole[-1].manifest.sha256

    first = stream(servicer, _job("inproc-resumed"), stop_after=3)  # start + samples 0 and 1, then walk away
    assert [m.sample.key for m in first[1:]] == [sample_key("inproc-resumed", 0), sample_key("inproc-resumed", 1)]
    assert not store.exists(sample_key("inproc-resumed", 2)) and not store.exists("datasets/inproc-resumed/manifest.json")
    store.put_bytes(sample_key("inproc-resumed", 0), store.get_bytes(sample_key("inproc-resumed", 0))[:-40])  # truncated

    resumed = stream(servicer, _job("inproc-resumed"))
    assert resumed[0].done == 1  # sample 1 kept, the truncated sample 0 drawn again
    assert [m.sample.key for m in resumed[1:-1]] == [sample_key("inproc-resumed", i) for i in (0, 2, 3, 4)]
    assert [m.provenance.seed for m in resumed[1:-1]] == [sample_seed(77, i) for i in (0, 2, 3, 4)]
    ours, theirs = read_generated_dataset(store, "inproc-resumed"), read_generated_dataset(store, "inproc-whole")
    assert len(ours) == 5
    for field in ("image", "mask", "normal", "seed", "normal_index"):
        np.testing.assert_array_equal(getattr(ours, field), getattr(theirs, field))
    np.testing.assert_array_equal(ours.image[~ours.mask], ours.normal[~ours.mask])
    assert (ours.normal_index == -1).all()  # no normal dataset: sampled normals

    finished = stream(servicer, _job("inproc-resumed", seed=0))  # seed 0 = the job's own
    assert [(m.done, m.HasField("sample")) for m in finished] == [(5, False), (5, False)]
    assert finished[-1].manifest == resumed[-1].manifest


def test_a_job_draws_on_a_normal_dataset_and_each_sample_is_reproduced_by_synthesize(servicer, twinray_settings, product_dataset):
    store = open_store(twinray_settings)
    stream(servicer, _job("inproc-on-products", count=3, method=CONDITIONED_DDPM, normal_dataset=product_dataset))
    generated = read_generated_dataset(store, "inproc-on-products")
    normals = read_product_split(store, product_dataset, "train_normal").image
    np.testing.assert_array_equal(generated.normal, normals[generated.normal_index])
    request = pb.SynthesizeDefectRequest(
        method=CONDITIONED_DDPM,
        normal_image=common_pb2.Image(png=encode_png_u16(generated.normal[2])),
        sampling=pb.SamplingOptions(steps=2, seed=int(generated.seed[2])),
    )
    answer = asyncio.run(servicer.synthesize(request))
    assert decode_png(answer.image_png).pixels.tolist() == (generated.image[2] / np.float32(65535)).tolist()


def test_a_job_with_other_parameters_or_on_another_kind_of_dataset_is_refused(servicer, product_dataset):
    stream(servicer, _job("inproc-fixed", count=2))
    with pytest.raises(InvalidInput, match=r"dataset 'inproc-fixed' exists with other parameters: count 2 \(asked 3\)"):
        stream(servicer, _job("inproc-fixed", count=3))
    with pytest.raises(InvalidInput, match=r"method 'mask_blend' \(asked 'conditioned_ddpm'\), seed 77 \(asked 78\)"):
        stream(servicer, _job("inproc-fixed", count=2, method=CONDITIONED_DDPM, seed=78))
    with pytest.raises(InvalidInput, match="dataset 'test-products' exists and is not a generated defect dataset"):
        stream(servicer, _job(product_dataset))
    with pytest.raises(InvalidInput, match="a dataset holds 1..100000 samples"):
        stream(servicer, _job("inproc-big", count=100_001))


# --- a store of its own: untrained tiny models, published as the trainers would ----------------------


def _publish(registry: ModelRegistry, name: str, module: torch.nn.Module, config: dict, training: dict) -> int:
    weights = io.BytesIO()
    torch.save(module.state_dict(), weights)
    return registry.publish(name, weights=weights.getvalue(), config=config, metrics={}, training=training, card="test").version


@pytest.fixture
def own_store(tmp_path, tiny_ddpm) -> Settings:
    """defect-masks v1 whose real defects are gone, normal-manifold v1 and v2, defect-encoder v1 for v1."""
    settings = Settings.from_env({"TWINRAY_HOME": str(tmp_path)})
    registry = ModelRegistry(open_store(settings))
    config, make = tiny_ddpm
    _publish(registry, "defect-masks", make(1), config.to_dict(), {"dataset": "gone", "train_split": "train_defect"})
    for seed in (2, 3):
        _publish(registry, "normal-manifold", make(seed), config.to_dict(), {})
    torch.manual_seed(4)
    encoder = DefectEncoder(DefectEncoderConfig(), config)
    for parameter in encoder.parameters():  # away from the zero start, so it really steers
        torch.nn.init.normal_(parameter, std=0.05)
    encoder_config = {"encoder": DefectEncoderConfig().to_dict(), "unet": config.to_dict(), "normal_manifold_version": 1}
    _publish(registry, "defect-encoder", encoder, encoder_config, {})
    return settings


def _conditioned_request(method: int = CONDITIONED_DDPM, **fields) -> pb.SynthesizeDefectRequest:
    normal = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 200).astype(np.uint16)
    return pb.SynthesizeDefectRequest(
        method=method,
        normal_image=common_pb2.Image(png=encode_png_u16(normal)),
        mask=mask_png(square_mask(16, 4, 9)),
        sampling=pb.SamplingOptions(steps=2, seed=3),
        **fields,
    )


def test_conditioned_ddpm_is_steered_by_the_encoder_trained_on_its_normal_manifold(own_store):
    servicer = DefectGenerationServicer(own_store, normal_version="1")
    steered = asyncio.run(servicer.synthesize(_conditioned_request()))
    check_answer(steered, 16)
    assert [(m.name, m.version) for m in steered.provenance.models] == [
        ("defect-masks", "1"),
        ("normal-manifold", "1"),
        ("defect-encoder", "1"),
    ]
    on_v2 = asyncio.run(
        servicer.synthesize(_conditioned_request(models=pb.DefectModels(normal=common_pb2.ModelRef(version="2"))))
    )
    assert [m.name for m in on_v2.provenance.models] == ["defect-masks", "normal-manifold"]  # no encoder for v2: RePaint
    plain_v1 = DefectGenerationServicer(own_store, normal_version="1", encoder_version="none")
    assert asyncio.run(plain_v1.synthesize(_conditioned_request())).image_png != steered.image_png
    mismatched = pb.DefectModels(normal=common_pb2.ModelRef(version="2"), encoder=common_pb2.ModelRef(version="1"))
    with pytest.raises(InvalidInput, match="defect-encoder v1 steers normal-manifold v1, not v2"):
        asyncio.run(servicer.synthesize(_conditioned_request(models=mismatched)))
    with pytest.raises(NotFound, match="model 'normal-manifold' has no version 9"):
        servicer.models.repin({"normal-manifold": "9"})  # what the deployment's user_config does
    assert asyncio.run(servicer.synthesize(_conditioned_request())).provenance.models == steered.provenance.models  # kept
    servicer.models.repin({"normal-manifold": "2"})
    repinned = asyncio.run(servicer.synthesize(_conditioned_request()))
    assert [(m.name, m.version) for m in repinned.provenance.models] == [("defect-masks", "1"), ("normal-manifold", "2")]


def test_mask_blend_without_its_real_defects_is_a_failed_precondition(own_store):
    servicer = DefectGenerationServicer(own_store)
    with pytest.raises(FailedPrecondition, match="mask_blend has no real defects to blend"):
        asyncio.run(servicer.synthesize(_conditioned_request(method=MASK_BLEND)))

"""DefectGeneration over Ray Serve's real gRPC ingress (the app of services/serve_config.yaml) with the
session's DDPMs trained on Ray: masks, mask_blend and conditioned_ddpm, every bad input's status, and a dataset job
that is interrupted and resumed."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import numpy as np
import pytest

from twinray.services.defect_generation.client import generate_dataset, sample_masks, synthesize_defect
from twinray.services.defect_generation.dataset import read_generated_dataset, sample_key
from twinray.shared.data.products.dataset import read_product_split
from twinray.shared.platform.imaging import decode_label_png, decode_png, encode_label_png, encode_png_u16
from twinray.shared.platform.storage import open_store
from twinray.v1 import common_pb2
from twinray.v1 import defect_generation_pb2 as pb

pytestmark = pytest.mark.integration
MASK_BLEND, CONDITIONED_DDPM = pb.DEFECT_METHOD_MASK_BLEND, pb.DEFECT_METHOD_CONDITIONED_DDPM


@pytest.fixture(scope="module")
def channel(trained_mask_ddpm, trained_normal_manifold, serve_channel) -> grpc.Channel:
    """The gRPC ingress once both DDPMs are published (the app resolves "latest" on its first call)."""
    return serve_channel


@pytest.fixture(scope="module")
def normal_png(twinray_settings, product_dataset) -> bytes:
    """A real 32 px normal surface, as a 16-bit PNG."""
    return encode_png_u16(read_product_split(open_store(twinray_settings), product_dataset, "test_normal").image[1])


def mask_message(values: np.ndarray) -> common_pb2.Mask:
    return common_pb2.Mask(png=encode_label_png(values.astype(np.uint8)))


def square(side: int, start: int, stop: int, value: int = 255) -> np.ndarray:
    mask = np.zeros((side, side), np.uint8)
    mask[start:stop, start:stop] = value
    return mask


def assert_equal_outside_the_mask(answer: pb.SynthesizeDefectResponse, side: int) -> np.ndarray:
    image, normal = decode_png(answer.image_png).pixels, decode_png(answer.normal_png).pixels
    mask = decode_label_png(answer.mask.png) == 255
    assert image.shape == normal.shape == mask.shape == (side, side) and mask.any()
    np.testing.assert_array_equal(image[~mask], normal[~mask])
    return mask


def test_sample_masks(channel, trained_mask_ddpm):
    answer = sample_masks(channel, pb.SampleMasksRequest(count=2, size=32, sampling=pb.SamplingOptions(steps=3)))
    masks = [decode_label_png(m.png) for m in answer.masks]
    assert len(masks) == 2 and all(m.shape == (32, 32) and set(np.unique(m)) <= {0, 255} and m.any() for m in masks)
    assert [(m.name, m.version) for m in answer.provenance.models] == [("defect-masks", str(trained_mask_ddpm.version))]
    assert answer.provenance.seed > 0 and len(answer.provenance.trace_id) == 32


def test_mask_blend_on_the_callers_image_and_mask(channel, normal_png):
    request = pb.SynthesizeDefectRequest(
        method=MASK_BLEND,
        normal_image=common_pb2.Image(png=normal_png),
        mask=mask_message(square(32, 8, 20)),
        sampling=pb.SamplingOptions(seed=4),
    )
    answer = synthesize_defect(channel, request)
    mask = assert_equal_outside_the_mask(answer, 32)
    np.testing.assert_array_equal(mask, square(32, 8, 20) == 255)
    assert decode_png(answer.normal_png).pixels.tolist() == decode_png(normal_png).pixels.tolist()
    assert answer.provenance.seed == 4


def test_conditioned_ddpm_with_a_sampled_normal_and_mask(channel, trained_normal_manifold):
    answer = synthesize_defect(channel, pb.SynthesizeDefectRequest(method=CONDITIONED_DDPM, sampling=pb.SamplingOptions(steps=3)))
    assert_equal_outside_the_mask(answer, 16)
    assert ("normal-manifold", str(trained_normal_manifold.version)) in [(m.name, m.version) for m in answer.provenance.models]


BAD = {
    "garbage normal image": (
        dict(normal_image=common_pb2.Image(png=b"not an image")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not a PNG file",
    ),
    "not square": (
        dict(normal_image=common_pb2.Image(png=encode_png_u16(np.zeros((32, 40), np.uint16)))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "normal image is 40x32; defects are drawn on square images",
    ),
    "empty mask": (dict(mask=mask_message(square(32, 0, 0))), grpc.StatusCode.INVALID_ARGUMENT, "mask is empty"),
    "mask of another size": (
        dict(mask=mask_message(square(24, 2, 9))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "mask is 24x24 but the normal image is 32x32",
    ),
    "mask not 0/255": (
        dict(mask=mask_message(square(32, 2, 9, value=1))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "mask must hold only 0 (outside) and 255 (inside); it holds [0, 1]",
    ),
    "method unset": (dict(method=0), grpc.StatusCode.INVALID_ARGUMENT, "method is unset: choose DEFECT_METHOD_MASK_BLEND"),
    "steps out of range": (
        dict(method=CONDITIONED_DDPM, sampling=pb.SamplingOptions(steps=500)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "steps 500 is out of range: the normal-manifold DDPM takes 1..50",
    ),
    "unknown model version": (
        dict(models=pb.DefectModels(masks=common_pb2.ModelRef(version="77"))),
        grpc.StatusCode.NOT_FOUND,
        "model 'defect-masks' has no version 77",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_synthesize_requests_get_a_precise_status_and_one_line(channel, normal_png, case):
    fields, code, message = BAD[case]
    valid = dict(method=MASK_BLEND, normal_image=common_pb2.Image(png=normal_png), mask=mask_message(square(32, 4, 9)))
    request = pb.SynthesizeDefectRequest(**{**valid, **fields})
    with pytest.raises(grpc.RpcError) as info:
        synthesize_defect(channel, request)
    assert info.value.code() == code, info.value.details()
    assert message in info.value.details()
    assert "\n" not in info.value.details() and "Traceback" not in info.value.details()


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.SampleMasksRequest(count=65), "count is 65; ask for 1..64 masks"),
        (pb.SampleMasksRequest(count=1, size=4), "size is 4 px; it must be 8..1024 px"),
        (
            pb.SampleMasksRequest(count=1, sampling=pb.SamplingOptions(steps=51)),
            "steps 51 is out of range: the defect-masks DDPM",
        ),
    ],
)
def test_bad_sample_masks_requests(channel, request_, message):
    with pytest.raises(grpc.RpcError) as info:
        sample_masks(channel, request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in info.value.details()


JOB = 6


def _job(name: str, **fields) -> pb.GenerateDatasetRequest:
    """conditioned_ddpm with 20 DDIM steps."""
    return pb.GenerateDatasetRequest(
        name=name,
        count=fields.pop("count", JOB),
        method=CONDITIONED_DDPM,
        sampling=pb.SamplingOptions(steps=20, seed=31),
        **fields,
    )


def _settled(read: Callable[[], object], quiet_s: float = 2.0, limit_s: float = 60.0) -> object:
    """What `read()` returns once it has not changed for `quiet_s` (a job that stopped writes no more)."""
    last, since, started = read(), time.monotonic(), time.monotonic()
    while time.monotonic() - since < quiet_s and time.monotonic() - started < limit_s:
        time.sleep(0.25)
        if (now := read()) != last:
            last, since = now, time.monotonic()
    return last


def test_an_interrupted_dataset_job_resumes_over_grpc_without_duplicates_or_gaps(channel, twinray_settings, product_dataset):
    store = open_store(twinray_settings)
    whole = list(generate_dataset(channel, _job("grpc-whole", normal_dataset=product_dataset)))
    assert (whole[0].done, whole[0].total) == (0, JOB) and [m.done for m in whole[1:-1]] == list(range(1, JOB + 1))
    manifest = whole[-1].manifest
    assert manifest.key == "datasets/grpc-whole/manifest.json" and len(manifest.sha256) == 64

    # A job whose server died while drawing sample 3, with one stored sample broken: samples 0 and 2
    # whole, no manifest. (Ray Serve's gRPC proxy does not pass a client's cancel on to the replica,
    # so a client cannot stop a job this way; the in-process servicer tests closing its stream.)
    call = generate_dataset(channel, _job("grpc-resumed", normal_dataset=product_dataset))
    assert [next(call).done for _ in range(4)] == [0, 1, 2, 3]
    call.cancel()
    _settled(lambda: store.exists("datasets/grpc-resumed/manifest.json"))
    for index in range(3, JOB):
        store.delete(sample_key("grpc-resumed", index))
    store.delete("datasets/grpc-resumed/manifest.json")
    store.put_bytes(sample_key("grpc-resumed", 1), b"PK\x03\x04 broken")  # a sample that is not whole
    stored = [0, 2]

    resumed = list(generate_dataset(channel, _job("grpc-resumed", normal_dataset=product_dataset)))
    assert resumed[0].done == len(stored)
    drawn = [int(m.sample.key[-10:-4]) for m in resumed[1:-1]]
    assert sorted(drawn) == drawn and set(drawn) == set(range(JOB)) - set(stored)  # no duplicates, no gaps
    ours, theirs = read_generated_dataset(store, "grpc-resumed"), read_generated_dataset(store, "grpc-whole")
    for field in ("image", "mask", "normal", "seed", "normal_index"):
        np.testing.assert_array_equal(getattr(ours, field), getattr(theirs, field))  # bit for bit

    with pytest.raises(grpc.RpcError) as info:
        list(generate_dataset(channel, _job("grpc-resumed", count=JOB + 1, normal_dataset=product_dataset)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"dataset 'grpc-resumed' exists with other parameters: count {JOB} (asked {JOB + 1})" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        list(generate_dataset(channel, _job("grpc-bad", normal_dataset="no-such-products")))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "no-such-products" in info.value.details()

"""The real plain-Python servicers with TWINRAY_TRITON_URL set: their networks run on Triton, their
answers equal the in-process ones (within the runner tolerance), and a Triton that is down or lacks
the version gives UNAVAILABLE / NOT_FOUND with a one-line message. (The detector's Triton path is
compared in test_triton_runners.py: its servicer composes two other services.)"""

from __future__ import annotations

import asyncio
import dataclasses
import io

import numpy as np
import pytest
import torch

from twinray.services.common.errors import status_code
from twinray.services.common.triton_runner import TritonEndpoint
from twinray.services.defect_generation.servicer import DefectGenerationServicer
from twinray.services.defect_generation.triton_unet import TritonUNet
from twinray.services.normal_synthesis.servicer import NormalSynthesisServicer
from twinray.services.segmentation.servicer import SegmentationServicer
from twinray.shared.data.phantoms.cxr import render_phantom
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import NotFound, TwinRayError, Unavailable
from twinray.shared.platform.imaging import decode_label_png, decode_png, encode_float01_png16, encode_label_png
from twinray.shared.platform.registry import ModelRegistry
from twinray.v1 import common_pb2, defect_generation_pb2, normal_synthesis_pb2, segmentation_pb2

pytestmark = pytest.mark.integration

TOLERANCE = 1e-4


def _settings(moto_s3, bucket: str, base: Settings, triton_url: str) -> Settings:
    """Settings from TWINRAY_* variables, as a replica reads them: the S3 bucket, and Triton or not."""
    env = {**base.as_env(), "TWINRAY_STORE_ENDPOINT": moto_s3.endpoint, "TWINRAY_STORE_BUCKET": bucket}
    env |= {"TWINRAY_STORE_ACCESS_KEY": moto_s3.access_key, "TWINRAY_STORE_SECRET_KEY": moto_s3.secret_key}
    return Settings.from_env({**env, "TWINRAY_TRITON_URL": triton_url})


def _inferences(url: str, name: str, version: int) -> int:
    stats = TritonEndpoint(url).client.get_inference_statistics(name, str(version), as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0))


def _image(size: int) -> common_pb2.Image:
    return common_pb2.Image(png=encode_float01_png16(render_phantom(4242, size, lesion_seed=7).image))


def test_segmentation_over_triton_answers_as_in_process(moto_s3, twinray_settings, triton_store, triton_server, triton_exported):
    on_triton = SegmentationServicer(_settings(moto_s3, triton_store.bucket, twinray_settings, triton_server))
    in_process = SegmentationServicer(_settings(moto_s3, triton_store.bucket, twinray_settings, ""))
    version = ModelRegistry(triton_store).latest("segmentation")
    request = segmentation_pb2.SegmentRequest(image=_image(96), model=common_pb2.ModelRef(version=str(version)))
    before = _inferences(triton_server, "segmentation", version)
    remote, local = on_triton.segment(request), in_process.segment(request)
    assert _inferences(triton_server, "segmentation", version) == before + 1  # it really ran on Triton
    assert list(remote.provenance.models) == list(local.provenance.models)
    remote_labels, local_labels = decode_label_png(remote.label_map.png), decode_label_png(local.label_map.png)
    assert remote_labels.shape == (96, 96) and len(np.unique(local_labels)) > 1
    # logits agree within TOLERANCE, so only a pixel whose top two classes tie that closely may differ
    assert (remote_labels == local_labels).mean() >= 0.999


def test_normal_synthesis_over_triton_answers_as_in_process(
    moto_s3, twinray_settings, triton_store, triton_server, triton_exported
):
    version = ModelRegistry(triton_store).latest("normal-synthesis")
    phantom = render_phantom(4242, 80, lesion_seed=7)
    request = normal_synthesis_pb2.SynthesizeRequest(
        image=common_pb2.Image(png=encode_float01_png16(phantom.image)),
        model=common_pb2.ModelRef(version=str(version)),
        anatomy=common_pb2.LabelMap(png=encode_label_png(phantom.anatomy)),
    )

    async def no_segmentation(_request: segmentation_pb2.SegmentRequest) -> segmentation_pb2.SegmentResponse:
        raise AssertionError("the request carries its anatomy map")

    def answer(triton_url: str) -> normal_synthesis_pb2.SynthesizeResponse:
        servicer = NormalSynthesisServicer(_settings(moto_s3, triton_store.bucket, twinray_settings, triton_url))
        return asyncio.run(servicer.synthesize(request, (), no_segmentation))

    remote, local = answer(triton_server), answer("")
    residual = {r: np.frombuffer(a.residual.data, "<f4") for r, a in (("remote", remote), ("local", local))}
    assert float(np.abs(residual["remote"] - residual["local"]).max()) <= TOLERANCE
    twins = decode_png(remote.twin_png).pixels, decode_png(local.twin_png).pixels
    assert float(np.abs(twins[0] - twins[1]).max()) <= TOLERANCE + 1 / 65535  # 16-bit PNG rounding
    assert list(remote.provenance.models) == list(local.provenance.models)


def test_defect_masks_sampled_on_triton_match_in_process(
    twinray_settings, trained_normal_manifold, triton_server, triton_exported
):
    """The mask DDPM's denoising steps run on Triton (the session store holds the same versions that
    were copied to Triton's bucket); the same seed draws the same masks."""
    version = int(max(triton_exported["models"]["defect-masks"]["versions"], key=int))
    request = defect_generation_pb2.SampleMasksRequest(
        count=2, sampling=defect_generation_pb2.SamplingOptions(seed=7, steps=10), model=common_pb2.ModelRef(version=str(version))
    )

    def servicer(triton_url: str) -> DefectGenerationServicer:
        settings = Settings.from_env({**twinray_settings.as_env(), "TWINRAY_TRITON_URL": triton_url})
        return DefectGenerationServicer(settings, masks_version=str(version), normal_version=str(trained_normal_manifold.version))

    on_triton = servicer(triton_server)
    before = _inferences(triton_server, "defect-masks", version)
    remote = asyncio.run(on_triton.sample_masks(request))
    assert _inferences(triton_server, "defect-masks", version) >= before + 10  # every DDIM step went to Triton
    assert isinstance(on_triton.models.get(on_triton.models.resolve(defect_generation_pb2.DefectModels())).mask_unet, TritonUNet)
    local = asyncio.run(servicer("").sample_masks(request))
    assert list(remote.provenance.models) == list(local.provenance.models) and remote.provenance.seed == 7
    for mine, theirs in zip(remote.masks, local.masks, strict=True):
        # predictions agree within TOLERANCE per step; a mask pixel flips only where a sample sits that close to 0.5
        assert (decode_label_png(mine.png) == decode_label_png(theirs.png)).mean() >= 0.99


def _refused(call) -> TwinRayError:
    with pytest.raises(TwinRayError) as raised:
        call()
    assert "\n" not in str(raised.value)
    return raised.value


def test_an_unreachable_triton_makes_the_servicer_unavailable(
    moto_s3, twinray_settings, triton_store, triton_exported, closed_port
):
    servicer = SegmentationServicer(_settings(moto_s3, triton_store.bucket, twinray_settings, f"127.0.0.1:{closed_port}"))
    error = _refused(lambda: servicer.segment(segmentation_pb2.SegmentRequest(image=_image(64))))
    assert isinstance(error, Unavailable) and status_code(error).name == "UNAVAILABLE"


def test_a_published_version_triton_lacks_is_not_found(moto_s3, twinray_settings, triton_store, triton_server, triton_exported):
    """A newer segmentation version published (in another bucket) but never exported."""
    store = moto_s3.store()
    registry = ModelRegistry(store)
    config = SegmenterConfig(input_size=32, channels=(4, 8))
    weights = io.BytesIO()
    torch.save(AnatomySegmenter(config).state_dict(), weights)
    for _ in range(ModelRegistry(triton_store).latest("segmentation") + 1):
        newest = registry.publish(
            "segmentation", weights=weights.getvalue(), config=config.to_dict(), metrics={}, training={}, card=""
        )
    servicer = SegmentationServicer(_settings(moto_s3, store.bucket, twinray_settings, triton_server))
    error = _refused(lambda: servicer.segment(segmentation_pb2.SegmentRequest(image=_image(64))))
    assert isinstance(error, NotFound) and status_code(error).name == "NOT_FOUND"
    assert f"version {newest.version}" in str(error) and "twinray export triton" in str(error)


def test_settings_read_the_triton_url_from_the_environment():
    assert Settings.from_env({"TWINRAY_TRITON_URL": "triton:8001"}).triton_url == "triton:8001"
    assert Settings.from_env({}).triton_url == ""
    assert dataclasses.replace(Settings(), triton_url="x").as_env()["TWINRAY_TRITON_URL"] == "x"

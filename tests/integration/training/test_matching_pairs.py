"""The CycleGAN learns (one loss step at a time), a real Ray Train run publishes it, and its
pseudo-pairs land in the artifact store exactly as the published translator makes them."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from twinray.shared.data.phantoms.cxr import render_phantom
from twinray.shared.data.phantoms.dataset import read_phantom_split
from twinray.shared.data.pseudo_pairs import read_pseudo_pairs
from twinray.shared.evaluation.twin import evaluate_translator
from twinray.shared.models.components.twin import full_resolution_twin, to_input_size
from twinray.shared.models.matching_pairs.network import TranslatorConfig, disease_logit, translator_from_weights
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import open_store
from twinray.shared.synthesis.pseudo_pairs import CALIBRATION, calibrated_change, write_pseudo_pairs
from twinray.training.matching_pairs import CycleGAN, Optimisers, critic_step, label_free_selection, train_step

TINY = TranslatorConfig(input_size=32, channels=4, n_res_blocks=1)


def _phantoms(seeds: range, *, abnormal: bool) -> torch.Tensor:
    images = [render_phantom(s, 64, lesion_seed=s + 1000 if abnormal else None).image for s in seeds]
    return to_input_size(torch.from_numpy(np.stack(images))[:, None], 32)


def test_cycle_and_identity_losses_fall_over_twenty_steps():
    torch.manual_seed(0)
    nets = CycleGAN.build(TranslatorConfig(input_size=32, channels=8, n_res_blocks=1), discriminator_channels=8)
    for generator in (nets.to_normal, nets.to_abnormal):  # start away from the identity, as a trained net would be
        torch.nn.init.normal_(generator.head.conv.weight, std=0.05)
    opts = Optimisers.build(nets, 1e-3, 1e-3)
    abnormal, normal = _phantoms(range(2), abnormal=True), _phantoms(range(2, 4), abnormal=False)
    history = [
        train_step(nets, opts, abnormal, normal, lambda_cycle=10.0, lambda_identity=5.0, lambda_disease=1.0) for _ in range(20)
    ]
    first, last = history[0], history[-1]
    assert last["cycle"] + last["identity"] < 0.5 * (first["cycle"] + first["identity"])
    assert all(np.isfinite(step[name]) for step in history for name in ("d", "adversarial", "disease", "critic"))


def test_disease_critic_learns_which_real_images_are_diseased():
    torch.manual_seed(0)
    nets = CycleGAN.build(TINY, discriminator_channels=8)
    opts = Optimisers.build(nets, 1e-3, 2e-3)
    abnormal, normal = _phantoms(range(4), abnormal=True), _phantoms(range(4, 8), abnormal=False)
    losses = [critic_step(nets, opts.critic, abnormal, normal) for _ in range(40)]
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        assert disease_logit(nets.critic, abnormal).min() > disease_logit(nets.critic, normal).max()


def test_calibration_keeps_only_the_change_beyond_what_healthy_images_get():
    change = torch.tensor([[[[-0.30, -0.05, 0.02, 0.20]]]])
    baseline = torch.tensor([[[[0.10, 0.10, 0.01, 0.25]]]])
    torch.testing.assert_close(calibrated_change(change, baseline), torch.tensor([[[[-0.20, 0.0, 0.01, 0.0]]]]))


def test_a_translator_that_changes_nothing_scores_zero(twinray_settings, phantom_dataset):
    val = read_phantom_split(open_store(twinray_settings), phantom_dataset, "val")
    identity = CycleGAN.build(TINY, 4).to_normal  # zero-initialised residual head
    scores = evaluate_translator(identity, val, TINY.input_size)
    assert scores["residual_in_lesion"] == 0.0 and scores["identity_change"] == 0.0
    assert scores["l1_to_twin"] == pytest.approx(scores["l1_input_to_twin"])


def test_label_free_selection_punishes_doing_nothing_and_changing_healthy_images():
    nets = CycleGAN.build(TINY, 4)
    abnormal, normal = torch.rand(6, 1, 32, 32), torch.rand(5, 1, 32, 32)
    idle = label_free_selection(nets.to_normal, nets.critic, abnormal, normal)
    assert idle["healthy_change_share"] == 1.0 and idle["selection"] == idle["critic_normal_rate"] - 1.0

    class Darken(torch.nn.Module):  # the same change on every image: all of it also hits the healthy ones
        def forward(self, image):
            return (image - 0.1).clamp(0.0, 1.0)

    uniform = label_free_selection(Darken(), nets.critic, abnormal + 0.2, normal + 0.2)
    assert uniform["healthy_change_share"] == pytest.approx(1.0, abs=0.02)
    assert 0.0 <= uniform["critic_normal_rate"] <= 1.0


@pytest.mark.integration
def test_ray_train_run_publishes_both_directions(trained_translator, twinray_settings):
    loaded = ModelRegistry(open_store(twinray_settings)).load("matching-pairs", trained_translator.version)
    assert TranslatorConfig.from_dict(loaded.config) == TINY
    state = torch.load(io.BytesIO(loaded.weights), weights_only=True)
    assert set(state) == {"abnormal_to_normal", "normal_to_abnormal"}
    assert loaded.metrics["epoch"] in (1, 2)
    assert 0.0 <= loaded.metrics["val_residual_in_lesion"] <= 1.0
    assert 0.0 <= loaded.metrics["val_residual_auroc"] <= 1.0
    assert loaded.metrics["val_selection"] == pytest.approx(
        loaded.metrics["val_critic_normal_rate"] - loaded.metrics["val_healthy_change_share"]
    )
    assert loaded.metrics["val_l1_to_twin"] >= 0.0
    assert translator_from_weights(loaded.config, loaded.weights)(torch.rand(1, 1, 32, 32)).shape == (1, 1, 32, 32)


@pytest.mark.integration
def test_pseudo_pairs_are_the_published_translation_and_are_reused(trained_translator, twinray_settings, phantom_dataset):
    store = open_store(twinray_settings)
    manifest = write_pseudo_pairs(store, model_version=trained_translator.version, dataset=phantom_dataset, progress=False)
    pairs = read_pseudo_pairs(store, f"{phantom_dataset}-pseudo-pairs")
    source = read_phantom_split(store, phantom_dataset, "train")
    abnormal = source.lesion_seed >= 0
    assert manifest["counts"] == {"abnormal": int(abnormal.sum()), "normal": int((~abnormal).sum())}
    assert {k: pairs.translator[k] for k in ("name", "version", "weights_sha256")} == {
        "name": "matching-pairs",
        "version": trained_translator.version,
        "weights_sha256": trained_translator.manifest["weights_sha256"],
    }
    assert pairs.pseudo_normal.dtype == np.uint16 and pairs.pseudo_normal.shape == pairs.abnormal.shape == (
        abnormal.sum(),
        64,
        64,
    )
    np.testing.assert_array_equal(pairs.abnormal, source.image[abnormal])
    np.testing.assert_array_equal(pairs.normal, source.image[~abnormal])
    np.testing.assert_array_equal(pairs.abnormal_person_seed, source.person_seed[abnormal])
    np.testing.assert_array_equal(pairs.normal_index, np.flatnonzero(~abnormal))

    # pseudo_normal = image + the published translator's change beyond what it does to healthy images
    loaded = ModelRegistry(store).load("matching-pairs", trained_translator.version)
    translator = translator_from_weights(loaded.config, loaded.weights)
    image = torch.from_numpy(pairs.abnormal.astype(np.float32) / 65535)[:, None]
    healthy = torch.from_numpy(pairs.normal.astype(np.float32) / 65535)[:, None]
    with torch.no_grad():
        baseline = (full_resolution_twin(translator, healthy, TINY.input_size) - healthy).abs().mean(dim=0, keepdim=True)
        change = full_resolution_twin(translator, image, TINY.input_size) - image
    expected = image + calibrated_change(change, baseline)
    assert np.abs(pairs.pseudo_normal / 65535.0 - expected[:, 0].numpy()).max() <= 1.0 / 65535
    assert pairs.translator["calibration"] == CALIBRATION
    # ... so it differs from the input only smoothly: the change has far less fine detail than the image
    laplacian = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    detail = lambda x: F.conv2d(x, laplacian).abs().mean()  # noqa: E731
    change = torch.from_numpy(pairs.pseudo_normal.astype(np.float32) / 65535)[:, None] - image
    assert detail(change) < 0.25 * detail(image)

    shard = manifest["shards"][0]
    assert (
        write_pseudo_pairs(store, model_version=trained_translator.version, dataset=phantom_dataset, progress=False) == manifest
    )
    assert store.get_bytes(shard["key"], sha256=shard["sha256"])  # reused, not rewritten

"""Drawing synthetic defects: sampled masks are binary, non-empty and reproducible, and both methods
(mask_blend, conditioned_ddpm) keep the normal image outside the mask exactly."""

from __future__ import annotations

import numpy as np
import pytest

from twinray.shared.data.products.dataset import read_product_split
from twinray.shared.models.defect_encoder.network import DefectEncoder, DefectEncoderConfig
from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.imaging.unit_range import to_unit
from twinray.shared.platform.storage import open_store
from twinray.shared.synthesis.defects import (
    load_generators,
    pick_normals,
    real_appearances,
    sample_masks,
    synthesize_conditioned_ddpm,
    synthesize_mask_blend,
    training_appearances,
)


@pytest.fixture
def product_arrays(twinray_settings, product_dataset):
    store = open_store(twinray_settings)
    return {split: read_product_split(store, product_dataset, split) for split in ("train_normal", "train_defect")}


def test_mask_blend_keeps_the_normal_outside_nonempty_masks(product_arrays, tiny_ddpm):
    tiny, make = tiny_ddpm
    normals = to_unit(product_arrays["train_normal"].image)
    real = product_arrays["train_defect"]
    masks = sample_masks(make(0), tiny, 6, 32, seed=2, steps=4, min_pixels=3)
    assert masks.shape == (6, 32, 32) and masks.dtype == bool and (masks.sum(axis=(1, 2)) >= 3).all()
    assert np.array_equal(masks, sample_masks(make(0), tiny, 6, 32, seed=2, steps=4, min_pixels=3))
    picks = pick_normals(6, len(normals), seed=2)
    made = synthesize_mask_blend(normals, masks, picks, real_appearances(to_unit(real.image[:2]), real.mask[:2]))
    assert made.image.shape == (6, 32, 32) and made.image.dtype == np.float32
    for image, mask, pick in zip(made.image, made.mask, made.normal_index):
        assert np.array_equal(image[~mask], normals[pick][~mask])
        assert not np.allclose(image[mask], normals[pick][mask])  # something was drawn inside
    with pytest.raises(InvalidInput, match="non-empty masks"):  # no mask can have more pixels than the image
        sample_masks(make(0), tiny, 2, 32, steps=2, min_pixels=32 * 32 + 1, max_draws=1)


@pytest.mark.parametrize("with_encoder", [False, True])
def test_conditioned_ddpm_keeps_the_normal_outside_exactly(product_arrays, with_encoder, tiny_ddpm):
    tiny, make = tiny_ddpm
    normals = to_unit(product_arrays["train_normal"].image)
    masks = np.zeros((3, 32, 32), bool)
    masks[0, 4:9, 4:12] = True
    masks[1, 20:30, 3:6] = True
    masks[2, 15, 15] = True  # one pixel: still a defect after the DDPM's 16 px grid
    encoder = DefectEncoder(DefectEncoderConfig(), tiny) if with_encoder else None
    picks = np.array([0, 5, 7])
    made = synthesize_conditioned_ddpm(make(1), tiny, encoder, normals, masks, picks, seed=3, steps=3, batch=2)
    assert made.image.shape == (3, 32, 32) and np.array_equal(made.mask, masks)
    for image, mask, pick in zip(made.image, masks, picks):
        assert np.array_equal(image[~mask], normals[pick][~mask])
        assert not np.array_equal(image[mask], normals[pick][mask])
        assert 0.0 <= image.min() and image.max() <= 1.0


@pytest.mark.integration
def test_load_generators_brings_the_real_defects_the_mask_model_saw(trained_mask_ddpm, trained_normal_manifold, twinray_settings):
    generators = load_generators(open_store(twinray_settings), encoder="")
    assert generators.encoder is None and generators.normal_unet is not None
    assert generators.versions == {
        "defect-masks": str(trained_mask_ddpm.version),
        "normal-manifold": str(trained_normal_manifold.version),
    }
    assert len(generators.appearances) == 5  # every train_defect image of the tiny dataset (real_count 0 = all)
    assert all(a.mask.any() and a.residual.shape == a.mask.shape for a in generators.appearances)
    assert training_appearances(open_store(twinray_settings), {"dataset": "no-such-dataset", "train_split": "train_defect"}) == []


def test_the_encoder_steers_the_normal_manifold_it_was_trained_with(tmp_path, tiny_ddpm):
    """A newer normal-manifold DDPM is not the one an encoder learnt to steer: the encoder's own is loaded."""
    from twinray.shared.models.defect_encoder.network import DefectEncoder, DefectEncoderConfig
    from twinray.shared.platform.registry import ModelRegistry
    from twinray.shared.platform.storage import LocalStore
    from twinray.training.harness import publish

    config, make = tiny_ddpm
    registry = ModelRegistry(LocalStore(tmp_path, "t"))
    ddpm = {"config": config.to_dict(), "metrics": {}, "card": "test"}
    publish(
        registry,
        "defect-masks",
        state_dict=make(0).state_dict(),
        training={"dataset": "gone", "train_split": "train_defect"},
        **ddpm,
    )
    for seed in (1, 2):  # normal-manifold versions 1 and 2
        publish(registry, "normal-manifold", state_dict=make(seed).state_dict(), training={}, **ddpm)
    encoder = DefectEncoder(DefectEncoderConfig(), config)
    publish(
        registry,
        "defect-encoder",
        state_dict=encoder.state_dict(),
        metrics={},
        training={},
        card="test",
        config={"encoder": DefectEncoderConfig().to_dict(), "unet": config.to_dict(), "normal_manifold_version": 1},
    )
    paired = load_generators(registry.store)
    assert paired.versions == {"defect-encoder": "1", "defect-masks": "1", "normal-manifold": "1"}
    assert paired.appearances == []  # the mask model's dataset is gone: mask_blend has no sources
    assert load_generators(registry.store, encoder="").versions["normal-manifold"] == "2"
    assert load_generators(registry.store, normal="2").versions["normal-manifold"] == "2"

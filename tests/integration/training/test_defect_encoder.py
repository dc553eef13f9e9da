"""Approach B's conditioning encoder trains on Ray against the FROZEN published normal-manifold DDPM,
publishes its EMA weights with that DDPM's version, and steers inpainting inside the mask only."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from twinray.shared.data.products.dataset import read_product_split
from twinray.shared.models.components.diffusion import DiffusionConfig, build_unet
from twinray.shared.models.defect_encoder.network import encoder_from_weights, inpaint_defect
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import open_store
from twinray.training.defect_encoder import DefectEncoderTrainConfig, augmented_pairs, defect_pairs


def test_defect_pairs_are_aligned_resized_images_and_binary_masks(twinray_settings, product_dataset):
    arrays = read_product_split(open_store(twinray_settings), product_dataset, "train_defect")
    images, masks = defect_pairs(arrays, 16)
    assert images.shape == masks.shape == (5, 1, 16, 16)
    assert 0.0 <= images.min() and images.max() <= 1.0 and set(torch.unique(masks).tolist()) <= {0.0, 1.0}
    full_images, full_masks = defect_pairs(arrays, 32, count=2)
    assert full_images.shape[0] == 2 and torch.equal(full_masks[:, 0].bool(), torch.from_numpy(arrays.mask[:2]))
    with pytest.raises(ValueError, match="no defect images"):
        defect_pairs(read_product_split(open_store(twinray_settings), product_dataset, "train_normal"), 16)


def test_augmented_pairs_turn_image_and_mask_alike():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    mask = (image % 3 == 0).float()
    images, masks = augmented_pairs(image, mask, 32, torch.Generator().manual_seed(0))
    assert images.shape == masks.shape == (32, 1, 4, 4)
    assert torch.equal(masks, (images % 3 == 0).float())  # the mask still marks the same pixels
    assert len({tuple(one.flatten().tolist()) for one in images}) > 4


@pytest.fixture(scope="module")
def trained_defect_encoder(trained_normal_manifold, product_dataset, twinray_settings):
    """A real (short) 2-worker (gloo DDP) Ray Train run against the session's tiny normal-manifold DDPM."""
    from twinray.training.defect_encoder import train_defect_encoder

    config = DefectEncoderTrainConfig(
        dataset=product_dataset,
        real_count=4,
        epochs=2,
        steps_per_epoch=4,
        batch_size=4,
        learning_rate=3e-3,
        workers=2,
        normal_manifold_version=str(trained_normal_manifold.version),
    )
    return train_defect_encoder(twinray_settings, config)


@pytest.mark.integration
def test_ray_run_publishes_an_encoder_that_steers_the_frozen_ddpm_inside_the_mask_only(
    trained_defect_encoder, trained_normal_manifold, twinray_settings, product_dataset
):
    registry = ModelRegistry(open_store(twinray_settings))
    loaded = registry.load("defect-encoder", trained_defect_encoder.version)
    assert loaded.version == trained_defect_encoder.version
    assert loaded.config["normal_manifold_version"] == trained_normal_manifold.version
    assert loaded.config["unet"] == registry.load("normal-manifold", trained_normal_manifold.version).config
    assert loaded.metrics["epoch"] in (1, 2) and loaded.metrics["training_images"] == 4
    for key in ("val_loss", "val_loss_frozen_ddpm", "val_score", "train_loss", "sample_change_in_mask"):
        assert np.isfinite(loaded.metrics[key]), key
    assert "normal-manifold` v" in registry.read_file("defect-encoder", loaded.version, "card.md").decode()

    normal_model = registry.load("normal-manifold", loaded.config["normal_manifold_version"])
    unet_config = DiffusionConfig.from_dict(loaded.config["unet"])
    unet = build_unet(unet_config)
    unet.load_state_dict(torch.load(io.BytesIO(normal_model.weights), weights_only=True))
    encoder = encoder_from_weights(loaded.config, loaded.weights)
    assert any(p.abs().sum() > 0 for p in encoder.mid_conv.parameters())  # trained away from its zero start

    normal = torch.linspace(0.2, 0.8, 2 * 16 * 16).reshape(2, 1, 16, 16)
    mask = torch.zeros_like(normal)
    mask[:, :, 5:11, 4:9] = 1.0
    out = inpaint_defect(unet.eval(), encoder, unet_config, normal, mask, steps=4, sampler="ddim", seed=0)
    plain = inpaint_defect(unet.eval(), None, unet_config, normal, mask, steps=4, sampler="ddim", seed=0)
    outside, inside = mask == 0, mask == 1
    assert torch.equal(out[outside], normal[outside])
    assert not torch.allclose(out[inside], normal[inside]) and 0.0 <= out.min() and out.max() <= 1.0
    assert not torch.equal(out[inside], plain[inside])  # the encoder, not only RePaint, changed the hole

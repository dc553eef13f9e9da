"""Both unconditional DDPMs of defect generation train on Ray, publish, and sample what they learnt from."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from twinray.shared.data.augmentation import augmented_batch
from twinray.shared.data.products.dataset import read_product_split
from twinray.shared.models.components.diffusion import DiffusionConfig, binarise, build_unet, sample
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import open_store
from twinray.training.ddpm import training_images


def test_training_images_are_the_masks_of_defect_images_only(twinray_settings, product_dataset):
    arrays = read_product_split(open_store(twinray_settings), product_dataset, "train_defect")
    masks = training_images(arrays, "mask", 16)
    assert masks.shape == (5, 1, 16, 16) and set(torch.unique(masks).tolist()) <= {0.0, 1.0}
    assert (masks.flatten(1).sum(1) > 0).all()
    assert training_images(arrays, "mask", 16, count=2).shape[0] == 2
    normals = training_images(read_product_split(open_store(twinray_settings), product_dataset, "train_normal"), "image", 32)
    assert normals.shape == (24, 1, 32, 32) and 0.0 <= normals.min() and normals.max() <= 1.0
    with pytest.raises(ValueError, match="no masks"):
        training_images(read_product_split(open_store(twinray_settings), product_dataset, "train_normal"), "mask", 16)


def test_augmentation_only_flips_and_turns():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    batch = augmented_batch(image, 32, torch.Generator().manual_seed(0))
    assert batch.shape == (32, 1, 4, 4)
    for one in batch:  # same pixels, rearranged by a symmetry of the square
        assert torch.equal(one.flatten().sort().values, image.flatten())
    assert len({tuple(one.flatten().tolist()) for one in batch}) > 4


@pytest.mark.integration
@pytest.mark.parametrize("fixture", ["trained_mask_ddpm", "trained_normal_manifold"])
def test_ray_run_publishes_ema_weights_that_sample(request, fixture, twinray_settings):
    version = request.getfixturevalue(fixture)
    loaded = ModelRegistry(open_store(twinray_settings)).load(version.name, version.version)
    config = DiffusionConfig.from_dict(loaded.config)
    assert config.image_size == 16 and config.train_timesteps == 50
    assert loaded.metrics["epoch"] in (1, 2) and loaded.metrics["val_loss"] > 0
    unet = build_unet(config)
    unet.load_state_dict(torch.load(io.BytesIO(loaded.weights), weights_only=True))
    images = sample(unet.eval(), config, 2, steps=5, sampler="ddim", seed=1)
    assert images.shape == (2, 1, 16, 16) and 0.0 <= images.min() and images.max() <= 1.0
    if version.name == "defect-masks":
        assert 0.0 <= loaded.metrics["sample_nonempty_fraction"] <= 1.0
        assert set(torch.unique(binarise(images)).tolist()) <= {0.0, 1.0}
    else:
        assert np.isfinite(loaded.metrics["sample_std"])

"""The DDPM building blocks: the UNet's shapes, the training loss, the samplers' determinism, range and
network-call count, mask helpers."""

from __future__ import annotations

import json

import pytest
import torch

from twinray.shared.models.components.diffusion import (
    DiffusionConfig,
    binarise,
    build_unet,
    ddpm_loss,
    make_scheduler,
    nonempty,
    sample,
    training_target,
)

TINY = DiffusionConfig(image_size=16, channels=(8, 16), layers_per_block=1, attention=True, train_timesteps=50)


def _unet(config: DiffusionConfig = TINY, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_unet(config).eval()


def _disks(count: int, size: int = 16) -> torch.Tensor:
    """Binary masks of disks of different centres and radii: something a DDPM can learn fast."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disks = [((ys - 4 - 2 * i) ** 2 + (xs - 10 + i) ** 2 <= (2 + i) ** 2).float() for i in range(count)]
    return torch.stack(disks)[:, None]


@pytest.mark.parametrize("attention", [True, False])
def test_unet_predicts_noise_of_the_input_shape(attention: bool):
    config = DiffusionConfig(image_size=32, channels=(8, 16, 16), layers_per_block=2, attention=attention, train_timesteps=50)
    unet = _unet(config)
    x = torch.randn(3, 1, 32, 32)
    assert unet(x, torch.tensor([0, 10, 49])).sample.shape == x.shape
    names = [type(block).__name__ for block in unet.down_blocks]
    assert names == (["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"] if attention else ["DownBlock2D"] * 3)


def test_config_survives_the_registry_json_and_rejects_bad_sizes():
    assert DiffusionConfig.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY
    with pytest.raises(ValueError, match="multiple of 4"):
        build_unet(DiffusionConfig(image_size=18, channels=(8, 8, 8)))
    with pytest.raises(ValueError, match="norm_groups"):
        build_unet(DiffusionConfig(image_size=16, channels=(8, 12)))
    with pytest.raises(ValueError, match="beta_schedule"):
        build_unet(DiffusionConfig(image_size=16, channels=(8, 16), beta_schedule="cosine"))
    with pytest.raises(ValueError, match="prediction"):
        build_unet(DiffusionConfig(image_size=16, channels=(8, 16), prediction="sample"))


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_the_training_target_is_the_noise_or_the_velocity(prediction: str):
    scheduler = make_scheduler(DiffusionConfig(image_size=16, channels=(8, 16), train_timesteps=50, prediction=prediction))
    x0, noise, t = torch.rand(3, 1, 4, 4) * 2 - 1, torch.randn(3, 1, 4, 4), torch.tensor([0, 20, 49])
    target = training_target(scheduler, x0, noise, t)
    abar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = noise if prediction == "epsilon" else abar.sqrt() * noise - (1 - abar).sqrt() * x0
    torch.testing.assert_close(target, expected)


def test_ddpm_loss_falls_when_overfitting_four_images():
    unet = _unet().train()
    scheduler = make_scheduler(TINY)
    images = _disks(4)

    def held_out_loss() -> float:  # fixed draws of t and noise, so before and after compare
        with torch.no_grad():
            draws = [torch.Generator().manual_seed(100 + i) for i in range(8)]
            return sum(ddpm_loss(unet, scheduler, images, g).item() for g in draws) / 8

    before = held_out_loss()
    optimiser = torch.optim.Adam(unet.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        optimiser.zero_grad()
        loss = ddpm_loss(unet, scheduler, images.repeat(4, 1, 1, 1), generator)
        assert loss.ndim == 0 and loss.dtype == torch.float32
        loss.backward()
        optimiser.step()
    assert held_out_loss() < 0.7 * before


@pytest.mark.parametrize(("sampler", "steps"), [("ddpm", None), ("ddim", 10)])
def test_samplers_are_deterministic_by_seed_and_in_unit_range(sampler: str, steps: int | None):
    unet = _unet()
    first = sample(unet, TINY, 2, steps=steps, sampler=sampler, seed=7)
    assert first.shape == (2, 1, 16, 16)
    assert first.min() >= 0.0 and first.max() <= 1.0
    assert torch.equal(first, sample(unet, TINY, 2, steps=steps, sampler=sampler, seed=7))
    assert not torch.equal(first, sample(unet, TINY, 2, steps=steps, sampler=sampler, seed=8))
    assert not torch.equal(first[0], first[1])


@pytest.mark.parametrize(("sampler", "steps", "calls"), [("ddim", 10, 10), ("ddim", 3, 3), ("ddpm", None, 50)])
def test_sampler_calls_the_unet_once_per_step(sampler: str, steps: int | None, calls: int):
    unet = _unet()
    seen: list[int] = []
    unet.register_forward_pre_hook(lambda module, args: seen.append(1))
    sample(unet, TINY, 1, steps=steps, sampler=sampler, seed=0)
    assert len(seen) == calls


def test_step_counts_are_checked():
    with pytest.raises(ValueError, match="DDPM samples with all 50"):
        make_scheduler(TINY, "ddpm", 10)
    with pytest.raises(ValueError, match="DDIM steps"):
        make_scheduler(TINY, "ddim", 51)
    with pytest.raises(ValueError, match="sampler"):
        make_scheduler(TINY, "euler")  # type: ignore[arg-type]
    assert len(make_scheduler(TINY, "ddpm").timesteps) == 50


def test_binarise_and_nonempty():
    images = torch.tensor([[0.2, 0.5], [0.51, 0.9]]).reshape(1, 1, 2, 2)
    assert torch.equal(binarise(images), torch.tensor([[0.0, 0.0], [1.0, 1.0]]).reshape(1, 1, 2, 2))
    masks = torch.zeros(3, 1, 4, 4)
    masks[1, 0, 0, 0] = 1
    masks[2, 0, :2, :2] = 1
    assert nonempty(masks).tolist() == [False, True, True]
    assert nonempty(masks, min_pixels=2).tolist() == [False, False, True]

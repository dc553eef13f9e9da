"""The conditioning encoder: residuals shaped like the UNet's skips, an untrained encoder that changes
nothing, gradients only to the encoder, inpainting that keeps every pixel outside the mask."""

from __future__ import annotations

import pytest
import torch

from twinray.shared.models.components.diffusion import (
    DiffusionConfig,
    build_unet,
    make_scheduler,
    noised,
    to_model_range,
    training_target,
)
from twinray.shared.models.defect_encoder.network import (
    DefectEncoder,
    DefectEncoderConfig,
    check_image_and_mask,
    conditioned_loss,
    conditioned_noise,
    inpaint_defect,
    unet_with_residuals,
)

TINY = DiffusionConfig(image_size=16, channels=(8, 16), layers_per_block=1, attention=True, train_timesteps=50)
DEEPER = DiffusionConfig(image_size=32, channels=(8, 16, 16), layers_per_block=2, attention=False, train_timesteps=50)
ENCODER = DefectEncoderConfig(channel_divisor=2)


def _models(
    config: DiffusionConfig = TINY, *, trained_encoder: bool = False, seed: int = 0
) -> tuple[torch.nn.Module, DefectEncoder]:
    torch.manual_seed(seed)
    unet = build_unet(config).eval()
    encoder = DefectEncoder(ENCODER, config).eval()
    if trained_encoder:  # non-zero output convolutions, as after training
        with torch.no_grad():
            for conv in [*encoder.skip_convs, encoder.mid_conv]:
                conv.weight.normal_(std=0.5)
    return unet, encoder


def _batch(size: int = 16, count: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Normal images in [0, 1] and square masks of different places."""
    normal = torch.rand(count, 1, size, size, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(count, 1, size, size)
    for i in range(count):
        mask[i, 0, 2 + i : 8 + i, 3 : 9 + 2 * i] = 1
    return normal, mask


def _unet_skip_shapes(unet: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    hooks = [unet.conv_in.register_forward_hook(lambda m, i, out: shapes.append(tuple(out.shape)))]
    for block in unet.down_blocks:  # a down block returns (hidden state, its skips)
        hooks.append(block.register_forward_hook(lambda m, i, out: shapes.extend(tuple(s.shape) for s in out[1])))
    unet(x, 3)
    for hook in hooks:
        hook.remove()
    return shapes


@pytest.mark.parametrize("config", [TINY, DEEPER], ids=["tiny-attention", "deeper"])
def test_residuals_have_the_shapes_of_the_unets_skips(config: DiffusionConfig):
    unet, encoder = _models(config)
    normal, mask = _batch(config.image_size)
    x_t = torch.randn_like(normal)
    skips, mid = encoder(x_t, torch.tensor([3, 40]), mask, normal)
    assert [tuple(s.shape) for s in skips] == _unet_skip_shapes(unet, x_t)
    lowest = config.image_size >> (len(config.channels) - 1)
    assert mid.shape == (2, config.channels[-1], lowest, lowest)


@pytest.mark.parametrize("config", [TINY, DEEPER], ids=["tiny-attention", "deeper"])
def test_untrained_encoder_leaves_the_frozen_ddpm_exactly_unchanged(config: DiffusionConfig):
    unet, encoder = _models(config)
    normal, mask = _batch(config.image_size)
    x_t = torch.randn_like(normal)
    for t in (0, 25, torch.tensor([49, 7])):
        with torch.no_grad():
            assert torch.equal(conditioned_noise(unet, encoder, x_t, t, mask, normal), unet(x_t, t).sample)


def test_trained_encoder_changes_the_prediction_and_reads_context_only_outside_the_mask():
    unet, encoder = _models(trained_encoder=True)
    normal, mask = _batch()
    x_t = torch.randn_like(normal)
    with torch.no_grad():
        steered = conditioned_noise(unet, encoder, x_t, 10, mask, normal)
        assert (steered - unet(x_t, 10).sample).abs().max() > 1e-3
        other_inside = torch.where(mask.bool(), torch.rand_like(normal), normal)
        assert torch.equal(conditioned_noise(unet, encoder, x_t, 10, mask, other_inside), steered)


def test_wrong_number_of_residuals_is_refused():
    unet, encoder = _models()
    normal, mask = _batch()
    skips, mid = encoder(normal, 1, mask, normal)
    with pytest.raises(ValueError, match="skips"):
        unet_with_residuals(unet, normal, 1, (skips[:-1], mid))


def test_conditioned_loss_trains_the_encoder_and_never_the_unet():
    unet, encoder = _models()
    unet.train()
    encoder.train()
    normal, mask = _batch()
    scheduler = make_scheduler(TINY)
    loss = conditioned_loss(unet, encoder, scheduler, normal, mask, normal, torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in unet.parameters())
    assert all(conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0 for conv in encoder.skip_convs)
    assert encoder.mid_conv.weight.grad.abs().sum() > 0


def test_mask_weight_one_is_plain_l_simple_and_a_large_one_is_the_loss_inside_the_mask():
    unet, encoder = _models(trained_encoder=True)
    normal, mask = _batch()
    scheduler = make_scheduler(TINY)

    def loss(weight: float) -> float:
        return conditioned_loss(unet, encoder, scheduler, normal, mask, normal, torch.Generator().manual_seed(0), weight).item()

    generator = torch.Generator().manual_seed(0)
    clean = to_model_range(normal)
    x_t, t, noise = noised(scheduler, clean, generator)
    error = (conditioned_noise(unet, encoder, x_t, t, mask, normal) - training_target(scheduler, clean, noise, t)) ** 2
    assert loss(1.0) == pytest.approx(error.mean().item(), rel=1e-5)
    assert loss(1e6) == pytest.approx(error[mask.bool()].mean().item(), rel=1e-3)


def test_conditioned_loss_falls_when_the_encoder_overfits_four_defects():
    unet, encoder = _models()
    encoder.train()
    scheduler = make_scheduler(TINY)
    normal, mask = _batch(count=4)
    defect = torch.where(mask.bool(), torch.ones_like(normal), normal)  # a bright patch inside each mask

    def held_out_loss() -> float:
        with torch.no_grad():
            draws = [torch.Generator().manual_seed(100 + i) for i in range(8)]
            return sum(conditioned_loss(unet, encoder, scheduler, defect, mask, defect, g).item() for g in draws) / 8

    before = held_out_loss()
    optimiser = torch.optim.Adam(encoder.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    frozen = [p.detach().clone() for p in unet.parameters()]
    for _ in range(30):
        optimiser.zero_grad()
        batch = [x.repeat(4, 1, 1, 1) for x in (defect, mask)]
        conditioned_loss(unet, encoder, scheduler, batch[0], batch[1], batch[0], generator).backward()
        optimiser.step()
    assert held_out_loss() < 0.9 * before
    assert all(torch.equal(a, b) for a, b in zip(frozen, unet.parameters()))


@pytest.mark.parametrize("with_encoder", [True, False], ids=["encoder", "plain-repaint"])
@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 10), ("ddpm", None)])
def test_inpainting_keeps_every_pixel_outside_the_mask(with_encoder: bool, sampler: str, steps: int | None):
    unet, encoder = _models(trained_encoder=True)
    normal, mask = _batch()
    chosen = encoder if with_encoder else None
    out = inpaint_defect(unet, chosen, TINY, normal, mask, steps=steps, sampler=sampler, seed=3)
    outside = ~mask.bool()
    assert torch.equal(out[outside], normal[outside])
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not torch.equal(out[~outside], normal[~outside])
    again = inpaint_defect(unet, chosen, TINY, normal, mask, steps=steps, sampler=sampler, seed=3)
    assert torch.equal(out, again)


def test_inpainting_refuses_bad_masks():
    normal, mask = _batch()
    with pytest.raises(ValueError, match="binary"):
        check_image_and_mask(normal, mask * 0.5)
    with pytest.raises(ValueError, match="one shape"):
        check_image_and_mask(normal, mask[:, :, :8])
    with pytest.raises(ValueError, match="one shape"):
        check_image_and_mask(normal[:, 0], mask[:, 0])

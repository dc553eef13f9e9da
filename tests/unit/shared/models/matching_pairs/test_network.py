"""The CycleGAN networks: shapes, the residual form, the [0, 1] range, rebuilding a published translator."""

from __future__ import annotations

import io
import math

import pytest
import torch

from twinray.shared.models.components.patchgan import PatchDiscriminator
from twinray.shared.models.matching_pairs.network import (
    ResidualTranslator,
    TranslatorConfig,
    disease_logit,
    translator_from_weights,
)

CONFIG = TranslatorConfig(input_size=32, channels=4, n_res_blocks=1, residual_sign=0)


def _randomised(config: TranslatorConfig = CONFIG, *, seed: int, scale: float = 0.5) -> ResidualTranslator:
    """A translator whose residual head is not zero (as after training)."""
    torch.manual_seed(seed)
    model = ResidualTranslator(config)
    torch.nn.init.normal_(model.head.conv.weight, std=scale)
    return model.eval()


def test_untrained_translator_is_exactly_the_identity():
    image = torch.rand(2, 1, 32, 32)
    model = ResidualTranslator(CONFIG).eval()
    assert torch.equal(model.residual(image), torch.zeros_like(image))
    assert torch.equal(model(image), image)


def test_output_is_input_plus_residual_clamped_to_unit_range():
    model = _randomised(seed=0, scale=5.0)  # large residuals, so the clamp matters
    image = torch.rand(3, 1, 32, 32)
    out = model(image)
    assert out.shape == image.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    torch.testing.assert_close(out, (image + model.residual(image)).clamp(0, 1))
    assert 0 < (out == 0).sum() and 0 < (out == 1).sum()


def test_one_signed_translators_only_remove_or_only_add_density():
    image = torch.rand(2, 1, 32, 32)
    untrained = ResidualTranslator(TranslatorConfig(input_size=32, channels=4, n_res_blocks=1, residual_sign=-1)).eval()
    assert untrained.residual(image).abs().max() < 1e-3  # one-signed heads start next to the identity
    for sign in (-1, 1):
        model = ResidualTranslator(CONFIG, sign=sign).eval()
        torch.nn.init.normal_(model.head.conv.weight, std=5.0)
        residual = model.residual(image)
        assert (residual * sign >= 0).all() and (residual.abs() > 0.1).any()


def test_disease_logit_is_a_soft_maximum_over_patches():
    critic = PatchDiscriminator(channels=4).eval()
    image = torch.rand(3, 1, 64, 64)
    patches = critic(image).flatten(1)
    logit = disease_logit(critic, image)
    assert (logit >= patches.mean(dim=1)).all() and (logit <= patches.max(dim=1).values).all()
    torch.testing.assert_close(logit, torch.logsumexp(patches, dim=1) - math.log(patches.shape[1]))


def test_translator_rejects_sizes_its_downsamplings_cannot_undo():
    with pytest.raises(ValueError, match="multiple of 4"):
        ResidualTranslator(CONFIG)(torch.rand(1, 1, 30, 30))


def test_patch_discriminator_gives_one_logit_per_patch():
    assert PatchDiscriminator(channels=4)(torch.rand(2, 1, 64, 64)).shape == (2, 1, 6, 6)


def test_config_round_trip_ignores_unknown_keys():
    assert TranslatorConfig.from_dict({**CONFIG.to_dict(), "unknown": 1}) == CONFIG


def test_rebuild_takes_the_abnormal_to_normal_direction():
    to_normal, to_abnormal = _randomised(seed=1), _randomised(seed=2)
    buffer = io.BytesIO()
    torch.save({"abnormal_to_normal": to_normal.state_dict(), "normal_to_abnormal": to_abnormal.state_dict()}, buffer)
    rebuilt = translator_from_weights(CONFIG.to_dict(), buffer.getvalue())
    assert not rebuilt.training
    image = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(rebuilt(image), to_normal(image))
    assert not torch.allclose(rebuilt(image), to_abnormal(image))

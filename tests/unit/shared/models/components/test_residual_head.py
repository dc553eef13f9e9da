"""The shared residual head: its sign constraint, its near-identity start, its argument check."""

from __future__ import annotations

import pytest
import torch

from twinray.shared.models.components.residual_head import ResidualHead


@pytest.mark.parametrize("sign", [-1, 0, 1])
def test_untrained_head_changes_almost_nothing(sign):
    out = ResidualHead(4, 3, sign)(torch.randn(2, 4, 8, 8))
    assert out.shape == (2, 1, 8, 8)
    assert out.abs().max() < 1e-3


@pytest.mark.parametrize("sign", [-1, 1])
def test_one_signed_head_never_crosses_zero_and_still_learns(sign):
    head = ResidualHead(4, 3, sign)
    features = torch.randn(2, 4, 8, 8)
    out = head(features)
    out.sum().backward()
    assert (out * sign >= 0).all()
    assert head.conv.weight.grad.abs().sum() > 0  # softplus keeps a gradient where relu would not


def test_unsigned_head_starts_at_exactly_zero():
    assert torch.equal(ResidualHead(4, 3, 0)(torch.randn(1, 4, 8, 8)), torch.zeros(1, 1, 8, 8))


def test_bad_sign_is_refused():
    with pytest.raises(ValueError, match="-1, 0 or 1"):
        ResidualHead(4, 3, 2)

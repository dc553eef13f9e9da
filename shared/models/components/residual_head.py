"""The output layer every twin generator shares: a convolution whose output is the CHANGE added to
the input, optionally one-signed.

Removing a consolidation only lowers density (a lesion is bright on a radiograph) and adding one
only raises it, so the abnormal -> normal direction may use sign -1 and normal -> abnormal sign +1:
r = sign * tanh(softplus(conv)). Softplus rather than ReLU because the identity losses push most
pixels to r = 0, where a ReLU's gradient vanishes for good (docs/decisions/0005-softplus-residual-head.md).
The weights start at zero (and the bias at -8 when one-signed, |r| = 3e-4), so an
untrained generator is the identity and training only learns what to change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualHead(nn.Module):
    """features (N,C,H,W) -> residual (N,1,H,W) in (-1, 1), or (-1, 0) / (0, 1) for sign -1 / +1."""

    def __init__(self, in_channels: int, kernel: int, sign: int = 0, padding_mode: str = "zeros") -> None:
        super().__init__()
        if sign not in (-1, 0, 1):
            raise ValueError(f"residual sign must be -1, 0 or 1, got {sign}")
        self.sign = sign
        self.conv = nn.Conv2d(in_channels, 1, kernel, padding=kernel // 2, padding_mode=padding_mode)
        nn.init.zeros_(self.conv.weight)
        nn.init.constant_(self.conv.bias, -8.0 if sign else 0.0)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.conv(features)
        return torch.tanh(out) if self.sign == 0 else self.sign * torch.tanh(F.softplus(out))

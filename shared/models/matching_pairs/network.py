"""CycleGAN networks (Zhu et al. 2017) for unpaired abnormal <-> normal chest X-ray translation.

The generator is the paper's ResNet generator with two changes that suit "remove the disease, keep
the person": it predicts a RESIDUAL added to its input (twinray.shared.models.components.residual_head: an untrained
translator is the identity, optionally one-signed), and
it upsamples by resize + convolution instead of transposed convolutions (no checkerboard artefacts
in the residual map that the detector later reads). The discriminator is the paper's PatchGAN
(twinray.shared.models.components.patchgan).
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

import torch
from torch import nn

from twinray.shared.models.components.config import ModelConfig
from twinray.shared.models.components.patchgan import PatchDiscriminator
from twinray.shared.models.components.residual_head import ResidualHead
from twinray.shared.models.components.twin import TwinFunction, full_resolution_twin


@dataclasses.dataclass(frozen=True)
class TranslatorConfig(ModelConfig):
    input_size: int = 128
    channels: int = 16  # after the input convolution; doubled at each downsampling
    n_res_blocks: int = 4
    downsamplings: int = 2
    # Sign of the abnormal -> normal change (see twinray.shared.models.components.residual_head): -1 = it may only remove
    # density, and the normal -> abnormal translator gets the opposite sign. The default is the
    # paper's unconstrained generator: one-signed translators barely moved from the identity in their
    # first epochs (docs/decisions/0006-unconstrained-translator.md).
    residual_sign: int = 0


def _conv_norm_relu(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, padding_mode="reflect"),
        nn.InstanceNorm2d(out_ch, affine=True),
        nn.ReLU(inplace=True),
    ]


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_norm_relu(channels, channels, 3),
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect"),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualTranslator(nn.Module):
    """Image (N,1,S,S) in [0,1] -> translated image clamp(x + residual, 0, 1), same shape.
    S must be a multiple of 2**downsamplings. `sign` overrides `config.residual_sign` (the
    normal -> abnormal direction uses the opposite sign)."""

    def __init__(self, config: TranslatorConfig, sign: int | None = None) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        layers = _conv_norm_relu(1, c, 7)
        for i in range(config.downsamplings):
            layers += _conv_norm_relu(c << i, c << (i + 1), 3, stride=2)
        layers += [_ResBlock(c << config.downsamplings) for _ in range(config.n_res_blocks)]
        for i in reversed(range(config.downsamplings)):
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)]
            layers += _conv_norm_relu(c << (i + 1), c << i, 3)
        self.body = nn.Sequential(*layers)
        self.head = ResidualHead(c, 7, config.residual_sign if sign is None else sign, padding_mode="reflect")

    def residual(self, image: torch.Tensor) -> torch.Tensor:
        """The change in (-1, 1) that `forward` adds to `image`."""
        return self.head(self.body(image * 2.0 - 1.0))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        side = 1 << self.config.downsamplings
        if image.ndim != 4 or image.shape[1] != 1 or image.shape[-1] % side or image.shape[-2] % side:
            raise ValueError(f"expected (N, 1, S, S) images with S a multiple of {side}, got {tuple(image.shape)}")
        return (image + self.residual(image)).clamp(0.0, 1.0)


def disease_logit(critic: PatchDiscriminator, images: torch.Tensor) -> torch.Tensor:
    """Image-level "diseased" logit (N,) of a patch critic: a smooth maximum over its patches.

    Multiple-instance learning: an abnormal image is a bag in which at least ONE patch holds a
    lesion, a normal image has none. Pooling with log-mean-exp (a soft maximum) lets the critic
    learn that from image labels alone and sends the translator's gradient mostly to the patches
    that still look diseased, where a PatchGAN's plain mean over mostly healthy patches dilutes
    the lesion signal. A hard maximum learns more slowly: one patch gets all the gradient
    (docs/decisions/0007-log-mean-exp-disease-critic.md).
    """
    logits = critic(images).flatten(1)
    return torch.logsumexp(logits, dim=1) - math.log(logits.shape[1])


def translator_from_weights(config: dict[str, Any], weights: bytes) -> ResidualTranslator:
    """Rebuild the published abnormal -> normal translator, ready for inference.

    `weights` is a torch-saved dict with one state dict per direction, {"abnormal_to_normal": ...,
    "normal_to_abnormal": ...} (the layout `twinray.training.matching_pairs` publishes); only the first is used.
    """
    state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    model = ResidualTranslator(TranslatorConfig.from_dict(config))
    model.load_state_dict(state["abnormal_to_normal"])
    return model.eval()


def translator_twin(translator: nn.Module, input_size: int) -> TwinFunction:
    """The translator as a twin function: full-resolution input -> full-resolution translation."""
    return lambda image: full_resolution_twin(translator.eval(), image, input_size)

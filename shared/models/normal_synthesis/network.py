"""The anatomy-conditioned normal-synthesis generator: abnormal CXR + anatomy map -> healthy twin.

Why SPADE (Park et al. 2019, "Semantic Image Synthesis with Spatially-Adaptive Normalization"): a
label map fed only at the input is washed out by the normalisation layers that follow; SPADE instead
re-injects the map at every decoder normalisation as a per-pixel scale and shift, so the twin keeps
the heart, diaphragm and clavicle outlines that the segmenter saw in the abnormal image.

The generator is RESIDUAL: twin = clamp(image + r, 0, 1) (twinray.shared.models.components.residual_head).
By default r has either sign: removing a consolidation lowers intensity, but undoing a pneumothorax
(density LOST, markings gone) must put density and structure back. `negative_residual` keeps the
earlier one-signed head, r in (-1, 0), for films whose disease only ever adds density.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from twinray.shared.data.anatomy import NUM_ANATOMY_CLASSES
from twinray.shared.models.components.config import ModelConfig
from twinray.shared.models.components.residual_head import ResidualHead
from twinray.shared.models.components.twin import full_resolution_twin, to_input_size


@dataclasses.dataclass(frozen=True)
class SpadeConfig(ModelConfig):
    num_classes: int = NUM_ANATOMY_CLASSES
    input_size: int = 128
    channels: tuple[int, ...] = (16, 32, 64)  # encoder width per resolution level, finest first
    n_blocks: int = 2  # SPADE residual blocks at the coarsest level
    hidden: int = 32  # anatomy features per resolution, from which each SPADE predicts gamma and beta
    # True: r <= 0, the twin may only remove density (it cannot undo a pneumothorax, a density LOSS)
    negative_residual: bool = False
    use_anatomy: bool = True  # False: the ablation without the anatomy prior (SPADE then reads an empty map)


def one_hot_anatomy(anatomy: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label maps (N,S,S) int64 -> float one-hot (N,C,S,S), the form SPADE reads."""
    return F.one_hot(anatomy.long(), num_classes).permute(0, 3, 1, 2).float()


class SPADE(nn.Module):
    """Parameter-free instance norm, then a per-pixel gamma and beta predicted from anatomy
    features at the feature's resolution: out = norm(x) * (1 + gamma) + beta (Park et al. 2019, eq. 1).

    Park et al. give every SPADE layer its own shared conv on the label map; here the generator
    embeds the map once per resolution (`AnatomyEmbedding`) and each layer only predicts its own
    gamma and beta from it, which costs a third of the FLOPs on a CPU budget.
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, anatomy_features: torch.Tensor) -> torch.Tensor:
        return self.norm(x) * (1 + self.gamma(anatomy_features)) + self.beta(anatomy_features)


class AnatomyEmbedding(nn.Module):
    """One-hot anatomy map -> `hidden` ReLU features at a given resolution (the label map resized
    nearest, as in Park et al. 2019), read by every SPADE layer at that resolution."""

    def __init__(self, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(num_classes, hidden, 3, padding=1)

    def forward(self, segmap: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return F.relu(self.conv(F.interpolate(segmap, size=size, mode="nearest")))


class SpadeResBlock(nn.Module):
    """SPADE ResBlk (Park et al. 2019, fig. 4): two SPADE-LeakyReLU-conv steps on a residual path;
    the shortcut is a 1x1 conv when the width changes (the paper's SPADE there is dropped: the
    residual path already carries the anatomy)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int) -> None:
        super().__init__()
        middle = min(in_channels, out_channels)
        self.norm_0 = SPADE(in_channels, hidden)
        self.conv_0 = nn.Conv2d(in_channels, middle, 3, padding=1)
        self.norm_1 = SPADE(middle, hidden)
        self.conv_1 = nn.Conv2d(middle, out_channels, 3, padding=1)
        self.shortcut = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor, anatomy_features: torch.Tensor) -> torch.Tensor:
        h = self.conv_0(F.leaky_relu(self.norm_0(x, anatomy_features), 0.2))
        h = self.conv_1(F.leaky_relu(self.norm_1(h, anatomy_features), 0.2))
        return self.shortcut(x) + h


def _conv_norm_act(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
        nn.InstanceNorm2d(out_channels, affine=True),
        nn.LeakyReLU(0.2, inplace=True),
    )


class AnatomyConditionedGenerator(nn.Module):
    """(image (N,1,S,S) in [0,1], anatomy (N,S,S) int64) -> twin (N,1,S,S) in [0,1].

    A U-Net: the encoder reads the image at len(channels) resolutions; the decoder, from the
    coarsest level up to half resolution, is made of SPADE ResBlks that read the anatomy map and the
    encoder's skip connections. The full-resolution step is a plain conv on the upsampled features
    and the first skip (SPADE there would triple the cost; lesions span several pixels at S/2).
    S must be divisible by 2 ** (len(channels) - 1); the intended S is `config.input_size`.
    """

    def __init__(self, config: SpadeConfig) -> None:
        super().__init__()
        self.config = config
        widths, hidden = config.channels, config.hidden
        self.encoder = nn.ModuleList(
            nn.Sequential(_conv_norm_act(1 if i == 0 else widths[i - 1], width, 1 if i == 0 else 2), _conv_norm_act(width, width))
            for i, width in enumerate(widths)
        )
        self.embed = nn.ModuleList(AnatomyEmbedding(config.num_classes, hidden) for _ in widths[1:])
        self.bottleneck = nn.ModuleList(SpadeResBlock(widths[-1], widths[-1], hidden) for _ in range(config.n_blocks))
        self.decoder = nn.ModuleList(
            SpadeResBlock(widths[i + 1] + widths[i], widths[i], hidden) for i in range(1, len(widths) - 1)
        )
        self.final = _conv_norm_act(widths[1] + widths[0], widths[0])
        self.head = ResidualHead(widths[0], 3, -1 if config.negative_residual else 0)

    def residual(self, image: torch.Tensor, anatomy: torch.Tensor) -> torch.Tensor:
        """r with twin = clamp(image + r, 0, 1): in (-1, 0) when `negative_residual`, else (-1, 1)."""
        segmap = one_hot_anatomy(anatomy, self.config.num_classes).to(image.dtype) * float(self.config.use_anatomy)
        skips, h = [], image * 2.0 - 1.0
        for stage in self.encoder:
            h = stage(h)
            skips.append(h)
        features = [embed(segmap, skip.shape[-2:]) for embed, skip in zip(self.embed, skips[1:])]
        for block in self.bottleneck:
            h = block(h, features[-1])
        for level in reversed(range(1, len(skips) - 1)):  # decoder[level - 1] works at skips[level]
            h = F.interpolate(h, size=skips[level].shape[-2:], mode="nearest")
            h = self.decoder[level - 1](torch.cat([h, skips[level]], dim=1), features[level - 1])
        h = F.interpolate(h, size=skips[0].shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.final(torch.cat([h, skips[0]], dim=1)))

    def forward(self, image: torch.Tensor, anatomy: torch.Tensor) -> torch.Tensor:
        return (image + self.residual(image, anatomy)).clamp(0.0, 1.0)


def resize_labels(labels: torch.Tensor, size: int) -> torch.Tensor:
    """Label maps (N,H,W) -> (N,size,size) int64, nearest neighbour from pixel centres (labels never
    blend; the same sampling as `twinray.shared.platform.imaging.labels_to_size`, which the service uses)."""
    if labels.shape[-2:] == (size, size):
        return labels.long()
    return F.interpolate(labels[:, None].float(), size=(size, size), mode="nearest-exact")[:, 0].long()


@torch.no_grad()
def segment_anatomy(segmenter: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The segmenter's anatomy map (N,S,S) int64 of images (N,1,H,W), at its own input size S."""
    return segmenter(to_input_size(image, segmenter.config.input_size)).argmax(dim=1)


def anatomy_conditioned_twin(generator: AnatomyConditionedGenerator, segmenter: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The full-resolution healthy twin of images (N,1,H,W) in [0,1]: segment, condition, synthesise.

    The anatomy map comes from the segmenter at its input size and is resized (nearest) to the
    generator's; only the generator's change is upsampled (`twinray.shared.models.components.twin.full_resolution_twin`).
    """
    size = generator.config.input_size
    anatomy = resize_labels(segment_anatomy(segmenter, image), size)
    return full_resolution_twin(lambda low: generator(low, anatomy), image, size)


def normal_synthesizer_from_weights(config: dict[str, Any], weights: bytes) -> AnatomyConditionedGenerator:
    """Rebuild a published normal-synthesis generator (config + torch state dict bytes), ready for inference."""
    model = AnatomyConditionedGenerator(SpadeConfig.from_dict(config))
    model.load_state_dict(torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True))
    return model.eval()

"""The lesion detector: torchvision's RetinaNet that may also see the healthy-twin residual.

Why: where the image differs from its healthy twin is where the disease is, so a detector told the
residual (image - twin) should find lesions that the image alone hides. The variants are the
ablation that tests this (Lin et al. 2017 RetinaNet, ResNet + FPN P3-P7, no pretrained weights):

- baseline: the image only;
- anatomy: the image + the one-hot anatomy map, to ask whether a twin adds anything beyond knowing
  where the organs are;
- concat: the image + the signed residual as a second input channel;
- attention: the backbone reads the image alone; the residual, pooled to each pyramid level, gates
  that level's features as features * (1 + a), a = sigmoid(small conv net) in (0, 1), so a map near
  zero leaves the features as they are. The v2 head's GroupNorm normalises away what is uniform over
  a level, so the gates say where to look, not how loudly.

Every variant takes ONE stacked input (N, C, S, S) built by `detector_inputs`. Labels follow
torchvision's RetinaNet: a sigmoid focal loss on one-hot targets with no background class, so
`num_classes` = len(PATHOLOGIES) and a box's label is its pathology's index in PATHOLOGIES.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18, resnet34
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from twinray.shared.data.anatomy import NUM_ANATOMY_CLASSES
from twinray.shared.data.phantoms.pathologies import PATHOLOGIES
from twinray.shared.models.components.config import ModelConfig

VARIANTS: tuple[str, ...] = ("baseline", "anatomy", "concat", "attention")
HEADS: tuple[str, ...] = ("v1", "v2")
BACKBONES = {"resnet18": resnet18, "resnet34": resnet34}
LEVELS: tuple[str, ...] = ("P3", "P4", "P5", "P6", "P7")  # strides 8 .. 128
IMAGE_MEAN, IMAGE_STD = 0.5, 0.25  # the image channel's normalisation; the other channels are left as they are


@dataclasses.dataclass(frozen=True)
class DetectorConfig(ModelConfig):
    variant: str = "baseline"
    input_size: int = 256  # a multiple of 32, so no padding shifts the pyramid against the image
    num_classes: int = len(PATHOLOGIES)
    backbone: str = "resnet18"
    fpn_channels: int = 256
    # anchor base size per level P3..P7 in px at input_size, each also at 2^(1/3) and 2^(2/3) times:
    # 8 px (a small nodule) up to ~200 px, with aspect ratios up to ~290 px (a large effusion)
    anchor_sizes: tuple[float, ...] = (8.0, 16.0, 32.0, 64.0, 128.0)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # height / width
    attention_hidden: int = 16  # width of each level's attention conv net (attention variant)
    # torchvision's RetinaNet v2 head: GroupNorm in both heads' conv towers and a GIoU box loss, which
    # train from scratch more steadily than the v1 head (no norm, L1 loss); "v1" keeps that one.
    head: str = "v2"
    score_threshold: float = 0.05
    detections_per_image: int = 100

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown detector variant {self.variant!r}: choose one of {', '.join(VARIANTS)}")
        if self.head not in HEADS:
            raise ValueError(f"unknown detector head {self.head!r}: choose one of {', '.join(HEADS)}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown detector backbone {self.backbone!r}: choose one of {', '.join(BACKBONES)}")
        if self.input_size <= 0 or self.input_size % 32:
            raise ValueError(f"input_size must be a positive multiple of 32, got {self.input_size}")
        if len(self.anchor_sizes) != len(LEVELS) or min(self.anchor_sizes) <= 0:
            raise ValueError(f"anchor_sizes needs one positive size per level {LEVELS}, got {self.anchor_sizes}")
        if not self.aspect_ratios or min(self.aspect_ratios) <= 0:
            raise ValueError(f"aspect_ratios must be positive, got {self.aspect_ratios}")
        for name in ("num_classes", "fpn_channels", "attention_hidden", "detections_per_image"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.head == "v2" and self.fpn_channels < 2:
            raise ValueError(
                f"the v2 head normalises groups of two channels at least: fpn_channels >= 2, got {self.fpn_channels}"
            )
        if not 0 <= self.score_threshold < 1:
            raise ValueError(f"score_threshold must be in [0, 1), got {self.score_threshold}")


def input_channels(config: DetectorConfig) -> int:
    """C of the stacked input: [image] (baseline), [image, residual] (concat, attention) or
    [image, one-hot anatomy x NUM_ANATOMY_CLASSES] (anatomy)."""
    return {"baseline": 1, "anatomy": 1 + NUM_ANATOMY_CLASSES, "concat": 2, "attention": 2}[config.variant]


def detector_inputs(
    config: DetectorConfig, image: torch.Tensor, residual: torch.Tensor | None = None, anatomy: torch.Tensor | None = None
) -> torch.Tensor:
    """The stacked input (N, input_channels(config), S, S) of images (N,1,S,S) in [0,1], S = input_size.

    `residual` (N,1,S,S) is image - twin (signed), read by concat and attention; `anatomy` (N,S,S)
    holds integer anatomy labels, read (one-hot) by the anatomy variant. Inputs a variant does not
    read are ignored, so one data pipeline feeds every variant of the ablation.
    """
    size = config.input_size
    if image.ndim != 4 or image.shape[1:] != (1, size, size):
        raise ValueError(f"image must be (N, 1, {size}, {size}), got {tuple(image.shape)}: resize it to input_size first")
    channels = [image]
    if config.variant in ("concat", "attention"):
        if residual is None:
            raise ValueError(f"the {config.variant} detector needs the residual (image - twin)")
        if residual.shape != image.shape:
            raise ValueError(f"residual must have the image's shape {tuple(image.shape)}, got {tuple(residual.shape)}")
        channels.append(residual.to(image.dtype))
    if config.variant == "anatomy":
        if anatomy is None:
            raise ValueError("the anatomy detector needs the anatomy label map")
        if anatomy.shape != (image.shape[0], size, size) or anatomy.is_floating_point():
            raise ValueError(
                f"anatomy must be integer labels of shape {(image.shape[0], size, size)}, got {anatomy.dtype} {tuple(anatomy.shape)}"
            )
        if anatomy.min() < 0 or anatomy.max() >= NUM_ANATOMY_CLASSES:
            raise ValueError(f"anatomy labels must be in 0..{NUM_ANATOMY_CLASSES - 1}")
        channels.append(F.one_hot(anatomy.long(), NUM_ANATOMY_CLASSES).permute(0, 3, 1, 2).to(image.dtype))
    return torch.cat(channels, dim=1)


def _resnet_fpn(config: DetectorConfig, in_channels: int) -> BackboneWithFPN:
    """A ResNet (no pretrained weights) whose first conv reads `in_channels`, with an FPN on C3-C5
    and P6, P7 computed from P5 (torchvision's retinanet_resnet50_fpn)."""
    resnet = BACKBONES[config.backbone](weights=None)
    resnet.conv1 = nn.Conv2d(in_channels, resnet.conv1.out_channels, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(resnet.conv1.weight, mode="fan_out", nonlinearity="relu")  # as ResNet initialises it
    widths = [getattr(resnet, f"layer{i}")[-1].conv2.out_channels for i in (2, 3, 4)]
    return BackboneWithFPN(
        resnet,
        return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
        in_channels_list=widths,
        out_channels=config.fpn_channels,
        extra_blocks=LastLevelP6P7(config.fpn_channels, config.fpn_channels),
    )


class ResidualAttentionBackbone(nn.Module):
    """Input [image, residual] -> FPN features of the image, each level gated by the residual.

    Per level, a small conv net reads [residual, |residual|] average-pooled to that level's grid
    (|residual| so that opposite-signed changes in one cell do not cancel) and gives a map
    a in (0, 1); the level's features become features * (1 + a). `last_attention` holds the maps
    of the latest forward (detached), keyed by LEVELS, each (N, 1, h, w) at that level's grid.
    """

    def __init__(self, body: BackboneWithFPN, hidden: int) -> None:
        super().__init__()
        self.body = body
        self.out_channels = body.out_channels
        self.attention = nn.ModuleDict(
            {
                level: nn.Sequential(
                    nn.Conv2d(2, hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 3, padding=1)
                )
                for level in LEVELS
            }
        )
        self.last_attention: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.body(x[:, :1])
        saliency = torch.cat([x[:, 1:], x[:, 1:].abs()], dim=1)
        gated: OrderedDict[str, torch.Tensor] = OrderedDict()
        for level, (name, feature) in zip(LEVELS, features.items()):
            a = torch.sigmoid(self.attention[level](F.adaptive_avg_pool2d(saliency, feature.shape[-2:])))
            self.last_attention[level] = a.detach()
            gated[name] = feature * (1 + a)
        return gated


def _head(config: DetectorConfig, anchors: int) -> RetinaNetHead:
    """The classification and box heads, as torchvision's retinanet_resnet50_fpn (v1) or _v2 builds them
    (GroupNorm of up to 32 groups of at least two channels; the box loss set as that builder sets it)."""
    if config.head == "v1":
        return RetinaNetHead(config.fpn_channels, anchors, config.num_classes)
    groups = math.gcd(32, config.fpn_channels // 2)  # two channels a group at least: a 1 x 1 level of one image still normalises
    head = RetinaNetHead(config.fpn_channels, anchors, config.num_classes, norm_layer=functools.partial(nn.GroupNorm, groups))
    head.regression_head._loss_type = "giou"
    return head


class LesionDetector(RetinaNet):
    """RetinaNet on `detector_inputs(config, ...)` (N, C, S, S): train mode takes targets (one dict
    per image: "boxes" (K,4) xyxy px float, "labels" (K,) int64 in [0, num_classes)) and returns its
    losses; eval mode returns one dict per image with "boxes", "scores" and "labels".

    The transform never resizes (S is already input_size) and normalises the image channel with
    mean 0.5, std 0.25, leaving the residual and anatomy channels as they are.
    """

    def __init__(self, config: DetectorConfig) -> None:
        channels = input_channels(config)
        if config.variant == "attention":
            backbone: nn.Module = ResidualAttentionBackbone(_resnet_fpn(config, 1), config.attention_hidden)
        else:
            backbone = _resnet_fpn(config, channels)
        anchors = AnchorGenerator(
            tuple(tuple(base * 2 ** (octave / 3) for octave in range(3)) for base in config.anchor_sizes),
            (config.aspect_ratios,) * len(LEVELS),
        )
        super().__init__(
            backbone,
            config.num_classes,
            min_size=config.input_size,
            max_size=config.input_size,
            image_mean=[IMAGE_MEAN] + [0.0] * (channels - 1),
            image_std=[IMAGE_STD] + [1.0] * (channels - 1),
            anchor_generator=anchors,
            head=_head(config, anchors.num_anchors_per_location()[0]),
            score_thresh=config.score_threshold,
            detections_per_img=config.detections_per_image,
        )
        self.config = config


@torch.no_grad()
def attention_maps(model: LesionDetector, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """The attention map per pyramid level (LEVELS -> (N, 1, h, w) in (0, 1)) of an attention
    detector in eval mode on stacked inputs (N, 2, S, S)."""
    if not isinstance(model.backbone, ResidualAttentionBackbone):
        raise ValueError(f"only the attention variant has attention maps, this detector is {model.config.variant!r}")
    if model.training:
        raise ValueError("call model.eval() first: a training-mode pass would update the BatchNorm statistics")
    model.backbone(model.transform(list(inputs))[0].tensors)
    return dict(model.backbone.last_attention)


def detector_from_weights(config: dict[str, Any], weights: bytes) -> LesionDetector:
    """Rebuild a published detector (config + torch state dict bytes), ready for inference."""
    model = LesionDetector(DetectorConfig.from_dict(config))
    model.load_state_dict(torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True))
    return model.eval()


@torch.no_grad()
def detect(
    model: LesionDetector, inputs: torch.Tensor, device: torch.device, batch_size: int = 8
) -> list[dict[str, torch.Tensor]]:
    """The eval-mode detections (one dict of "boxes", "scores", "labels" per image, on the CPU) of
    stacked inputs (N, C, S, S), `batch_size` images at a time on `device`."""
    model.eval()
    found: list[dict[str, torch.Tensor]] = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size].to(device)
        found += [{key: value.cpu() for key, value in image.items()} for image in model(list(batch))]
    return found

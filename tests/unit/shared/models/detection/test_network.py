"""The lesion detector: every variant trains and detects, its inputs are stacked as documented,
the attention gates follow the residual, and a published detector rebuilds identically."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest
import torch

from twinray.shared.data.anatomy import NUM_ANATOMY_CLASSES
from twinray.shared.data.phantoms.pathologies import PATHOLOGIES
from twinray.shared.models.detection.network import (
    LEVELS,
    VARIANTS,
    DetectorConfig,
    LesionDetector,
    attention_maps,
    detect,
    detector_from_weights,
    detector_inputs,
    input_channels,
)

SIZE = 64
TINY = DetectorConfig(input_size=SIZE, fpn_channels=16, attention_hidden=4, score_threshold=0.0, detections_per_image=10)


def _config(variant: str) -> DetectorConfig:
    return dataclasses.replace(TINY, variant=variant)


def _detector(variant: str, seed: int = 0) -> LesionDetector:
    torch.manual_seed(seed)
    return LesionDetector(_config(variant))


def _data(n: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 1, SIZE, SIZE, generator=generator)
    residual = torch.rand(n, 1, SIZE, SIZE, generator=generator) * 2 - 1
    anatomy = torch.randint(0, NUM_ANATOMY_CLASSES, (n, SIZE, SIZE), generator=generator)
    return image, residual, anatomy


def _inputs(variant: str, seed: int = 1) -> torch.Tensor:
    image, residual, anatomy = _data(seed=seed)
    return detector_inputs(_config(variant), image, residual, anatomy)


TARGETS = [  # one image with two lesions, one without any
    {"boxes": torch.tensor([[10.0, 12.0, 30.0, 34.0], [40.0, 5.0, 60.0, 50.0]]), "labels": torch.tensor([1, 3])},
    {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
]


def test_defaults_detect_the_four_pathologies_without_a_background_class():
    config = DetectorConfig()
    assert config.num_classes == len(PATHOLOGIES) == 4
    torch.manual_seed(0)
    model = LesionDetector(dataclasses.replace(TINY, backbone="resnet34"))
    logits = model.head.classification_head(list(model.backbone(_inputs("baseline")).values()))
    assert logits.shape[-1] == len(PATHOLOGIES)


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_returns_finite_losses_that_reach_the_first_convolution(variant):
    model = _detector(variant).train()
    losses = model(_inputs(variant), TARGETS)
    assert set(losses) == {"classification", "bbox_regression"}
    assert all(torch.isfinite(loss) and loss > 0 for loss in losses.values())
    sum(losses.values()).backward()
    first_conv = next(model.parameters())  # the ResNet's conv1, which reads the stacked input
    assert first_conv.shape[1] == (1 if variant == "attention" else input_channels(model.config))
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    if variant == "attention":
        # the v2 head's GroupNorm normalises a gate that is uniform over its level away: at 64 px P6 and
        # P7 are one cell, so only the levels with several cells learn where to look
        cells = {level: gate[0, 0].numel() for level, gate in model.backbone.last_attention.items()}
        assert cells["P6"] == cells["P7"] == 1
        gate_grads = {level: net[0].weight.grad for level, net in model.backbone.attention.items()}
        assert all(gate_grads[level].abs().sum() > 0 for level in LEVELS if cells[level] > 1)
        assert all(gate_grads[level] is None or gate_grads[level].abs().max() < 1e-6 for level in ("P6", "P7"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_evaluation_returns_boxes_scores_and_labels_per_image(variant):
    with torch.no_grad():
        detections = _detector(variant).eval()(_inputs(variant))
    assert len(detections) == 2
    for found in detections:
        assert set(found) == {"boxes", "scores", "labels"}
        assert 1 <= len(found["boxes"]) <= TINY.detections_per_image
        assert found["boxes"].shape == (len(found["scores"]), 4)
        assert found["boxes"].min() >= 0 and found["boxes"].max() <= SIZE
        assert found["labels"].dtype == torch.int64
        assert found["labels"].min() >= 0 and found["labels"].max() < len(PATHOLOGIES)


def test_detect_runs_in_batches_and_gives_what_one_pass_gives():
    model, inputs = _detector("concat"), torch.cat([_inputs("concat", seed) for seed in (1, 2)])
    found = detect(model, inputs, torch.device("cpu"), batch_size=3)
    assert not model.training and len(found) == len(inputs)
    with torch.no_grad():
        whole = model(list(inputs))
    for batched_one, single in zip(found, whole):  # an untrained head ties many scores: compare them sorted
        assert batched_one["boxes"].device.type == "cpu" and len(batched_one["boxes"]) == len(single["boxes"])
        torch.testing.assert_close(batched_one["scores"].sort().values, single["scores"].sort().values)


def test_the_transform_keeps_the_size_and_normalises_only_the_image_channel():
    model = _detector("concat").eval()
    image, residual, _ = _data()
    batch = model.transform(list(detector_inputs(model.config, image, residual)))[0]
    assert batch.image_sizes == [(SIZE, SIZE)] * 2
    torch.testing.assert_close(batch.tensors[:, :1], (image - 0.5) / 0.25)
    torch.testing.assert_close(batch.tensors[:, 1:], residual)


def test_detector_inputs_stack_the_channels_each_variant_reads():
    image, residual, anatomy = _data()
    stacks = {variant: detector_inputs(_config(variant), image, residual, anatomy) for variant in VARIANTS}
    assert {variant: stack.shape[1] for variant, stack in stacks.items()} == {
        "baseline": 1,
        "anatomy": 1 + NUM_ANATOMY_CLASSES,
        "concat": 2,
        "attention": 2,
    }
    for variant, stack in stacks.items():
        assert stack.shape[1] == input_channels(_config(variant))
        torch.testing.assert_close(stack[:, :1], image)
    torch.testing.assert_close(stacks["concat"][:, 1:], residual)
    torch.testing.assert_close(stacks["attention"][:, 1:], residual)
    one_hot = stacks["anatomy"][:, 1:]
    assert torch.equal(one_hot.sum(dim=1), torch.ones(2, SIZE, SIZE)) and torch.equal(one_hot.argmax(dim=1), anatomy)


@pytest.mark.parametrize(
    ("variant", "change", "message"),
    [
        ("concat", {"residual": None}, "needs the residual"),
        ("attention", {"residual": None}, "needs the residual"),
        ("anatomy", {"anatomy": None}, "needs the anatomy"),
        ("concat", {"residual": torch.zeros(2, 1, SIZE, SIZE - 1)}, "residual must have the image's shape"),
        ("attention", {"residual": torch.zeros(1, 1, SIZE, SIZE)}, "residual must have the image's shape"),
        ("anatomy", {"anatomy": torch.zeros(2, SIZE, SIZE // 2, dtype=torch.int64)}, "anatomy must be integer labels"),
        ("anatomy", {"anatomy": torch.zeros(2, SIZE, SIZE)}, "anatomy must be integer labels"),
        ("anatomy", {"anatomy": torch.full((2, SIZE, SIZE), NUM_ANATOMY_CLASSES)}, "anatomy labels must be in"),
        ("baseline", {"image": torch.zeros(2, 1, 32, 32)}, "resize it to input_size"),
        ("baseline", {"image": torch.zeros(2, 2, SIZE, SIZE)}, "image must be"),
    ],
)
def test_detector_inputs_refuse_missing_or_mismatched_inputs(variant, change, message):
    image, residual, anatomy = _data()
    arguments = {"image": image, "residual": residual, "anatomy": anatomy} | change
    with pytest.raises(ValueError, match=message):
        detector_inputs(_config(variant), **arguments)


def test_the_baseline_reads_no_residual():
    image, residual, _ = _data()
    config = _config("baseline")
    stack, other = detector_inputs(config, image, residual), detector_inputs(config, image, -residual)
    assert torch.equal(stack, other) and torch.equal(stack, detector_inputs(config, image))
    model = _detector("baseline").eval()
    with torch.no_grad():
        first, second = model(stack), model(other)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)


def test_attention_maps_exist_per_level_in_the_open_unit_interval_and_follow_the_residual():
    model = _detector("attention").eval()
    image, residual, _ = _data()
    maps = attention_maps(model, detector_inputs(model.config, image, residual))
    assert list(maps) == list(LEVELS)
    sizes = {level: tuple(a.shape) for level, a in maps.items()}
    assert sizes == {"P3": (2, 1, 8, 8), "P4": (2, 1, 4, 4), "P5": (2, 1, 2, 2), "P6": (2, 1, 1, 1), "P7": (2, 1, 1, 1)}
    assert all(a.min() > 0 and a.max() < 1 for a in maps.values())
    changed = attention_maps(model, detector_inputs(model.config, image, residual.flip(-1) * 0.3))
    assert all(not torch.allclose(maps[level], changed[level]) for level in LEVELS)
    with torch.no_grad():  # the maps of a full forward are the ones reported, and they gate every level's features
        model(detector_inputs(model.config, image, residual))
        assert all(torch.equal(model.backbone.last_attention[level], maps[level]) for level in LEVELS)
        before = model.backbone(detector_inputs(model.config, image, residual))
        after = model.backbone(detector_inputs(model.config, image, residual.flip(-1) * 0.3))
    assert all(not torch.allclose(before[name], after[name]) for name in before)


def test_a_vanishing_attention_leaves_the_features_as_they_are():
    model = _detector("attention").eval()
    with torch.no_grad():
        for net in model.backbone.attention.values():
            net[-1].weight.zero_()
            net[-1].bias.fill_(-40.0)  # sigmoid(-40) ~ 4e-18
        stack = _inputs("attention")
        gated, plain = model.backbone(stack), model.backbone.body(stack[:, :1])
    assert list(gated) == list(plain)
    for name in plain:
        torch.testing.assert_close(gated[name], plain[name])


def test_attention_maps_need_an_attention_detector_in_eval_mode():
    with pytest.raises(ValueError, match="only the attention variant"):
        attention_maps(_detector("concat").eval(), _inputs("concat"))
    with pytest.raises(ValueError, match="model.eval"):
        attention_maps(_detector("attention").train(), _inputs("attention"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_rebuild_from_published_config_and_weights(variant):
    model = _detector(variant).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    config = json.loads(json.dumps(model.config.to_dict()))  # what the registry stores
    rebuilt = detector_from_weights(config, buffer.getvalue())
    assert rebuilt.config == model.config and not rebuilt.training
    inputs = _inputs(variant)
    with torch.no_grad():
        expected, found = model(inputs), rebuilt(inputs)
    assert len(expected[0]["boxes"]) > 0
    for a, b in zip(expected, found):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"variant": "residual"}, "unknown detector variant 'residual': choose one of baseline, anatomy, concat, attention"),
        ({"backbone": "resnet50"}, "unknown detector backbone 'resnet50': choose one of resnet18, resnet34"),
        ({"input_size": 100}, "multiple of 32"),
        ({"input_size": 0}, "multiple of 32"),
        ({"anchor_sizes": (8.0, 16.0, 32.0, 64.0)}, "one positive size per level"),
        ({"anchor_sizes": (0.0, 16.0, 32.0, 64.0, 128.0)}, "one positive size per level"),
        ({"aspect_ratios": ()}, "aspect_ratios"),
        ({"num_classes": 0}, "num_classes must be at least 1"),
        ({"fpn_channels": 0}, "fpn_channels must be at least 1"),
        ({"detections_per_image": 0}, "detections_per_image must be at least 1"),
        ({"score_threshold": 1.0}, "score_threshold"),
    ],
)
def test_bad_configs_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TINY, **change)


def test_the_v2_head_normalises_its_towers_and_regresses_giou_the_v1_head_neither():
    v2, v1 = _detector("baseline"), LesionDetector(dataclasses.replace(TINY, head="v1"))
    norms = [m for m in v2.head.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 8 and {m.num_groups for m in norms} == {8}  # 4 per tower; 16 channels, two a group
    assert v2.head.regression_head._loss_type == "giou" and v1.head.regression_head._loss_type == "l1"
    assert not [m for m in v1.head.modules() if isinstance(m, torch.nn.GroupNorm)]
    with pytest.raises(ValueError, match="unknown detector head"):
        DetectorConfig(head="v3")
    with pytest.raises(ValueError, match="fpn_channels >= 2"):
        DetectorConfig(fpn_channels=1)

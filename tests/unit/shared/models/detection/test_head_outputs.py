"""The detector split for serving elsewhere (network here, decoding there) answers exactly as
torchvision's RetinaNet forward does, for every variant and both heads."""

from __future__ import annotations

import pytest
import torch

from twinray.shared.models.detection.head_outputs import DetectorCore, detections_from_head, detector_skeleton
from twinray.shared.models.detection.network import DetectorConfig, LesionDetector, detect, input_channels


@pytest.mark.parametrize(("variant", "head"), [("attention", "v2"), ("anatomy", "v1")])
def test_core_then_decoding_equals_the_detector(variant, head):
    torch.manual_seed(0)
    config = DetectorConfig(
        variant=variant, head=head, input_size=64, fpn_channels=8, attention_hidden=4, score_threshold=0.0, detections_per_image=7
    )
    detector = LesionDetector(config).eval()
    inputs = torch.rand(3, input_channels(config), 64, 64)
    expected = detect(detector, inputs, torch.device("cpu"), batch_size=3)
    with torch.no_grad():
        cls_logits, bbox_regression = DetectorCore(detector)(inputs)
    found = detections_from_head(detector_skeleton(config), inputs, cls_logits, bbox_regression)
    assert [len(f["boxes"]) for f in found] == [7, 7, 7]
    for mine, theirs in zip(found, expected):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(mine[key], theirs[key]), key


def test_head_outputs_of_another_grid_are_refused():
    config = DetectorConfig(input_size=64, fpn_channels=8)
    inputs = torch.rand(1, 1, 64, 64)
    with pytest.raises(ValueError, match="anchors"):
        detections_from_head(detector_skeleton(config), inputs, torch.zeros(1, 100, 3), torch.zeros(1, 100, 4))


def test_the_skeleton_holds_no_weights():
    skeleton = detector_skeleton(DetectorConfig(input_size=64, fpn_channels=8))
    assert {p.device.type for p in skeleton.parameters()} == {"meta"}

"""The demo's detection step: it reuses the session's published attention detector, and its figures
come from real Detect calls over Ray Serve gRPC (composed with NormalSynthesis and Segmentation)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from twinray.services.cli.demo_detection import detection_cases, train_detector
from twinray.shared.data.phantoms.dataset import read_phantom_split
from twinray.shared.evaluation.normal_synthesis import one_case_per_pathology
from twinray.shared.platform.storage import open_store


@pytest.mark.integration
def test_detection_cases_draw_served_boxes_residuals_and_gates(
    grpc_channel, trained_detector, trained_normal_synthesizer, phantom_dataset, twinray_settings, tmp_path, capsys
):
    store = open_store(twinray_settings)
    version = train_detector(twinray_settings, store, trained_normal_synthesizer.version, phantom_dataset)
    assert version == trained_detector.version
    figures = detection_cases(grpc_channel, store, tmp_path, phantom_dataset, version)

    assert [path.name for path in figures] == ["detection.png", "detection_attention.png"]
    cases = len(one_case_per_pathology(read_phantom_split(store, phantom_dataset, "test")))
    printed = capsys.readouterr().out
    assert f"reusing published detection v{version}" in printed
    assert printed.count("best IoU per true box") == cases
    assert f"served by detection v{version}, normal-synthesis v{trained_normal_synthesizer.version}" in printed
    for path in figures:
        with Image.open(path) as image:
            assert image.size[1] >= 200 * cases and np.asarray(image).std() > 0
        assert store.get_bytes(f"reports/demo/{path.name}") == path.read_bytes()

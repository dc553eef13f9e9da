"""`twinray eval detection`'s ablation end to end on the session's published tools (segmenter,
translator, generator trained with Ray Train): residuals and synthetic images stored, every row
fitted in-process per seed, the shared report shape, the figures."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from twinray.services.cli.main import main
from twinray.shared.data.phantoms.dataset import write_phantom_dataset
from twinray.shared.evaluation.report import check_shape
from twinray.shared.models.detection.network import DetectorConfig
from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.storage import open_store
from twinray.training.detection_benchmark import LEARNED_ROWS, ROWS, DetectionBudget, run_detection_benchmark

pytestmark = pytest.mark.integration

TINY = DetectorConfig(fpn_channels=16, attention_hidden=4, detections_per_image=5)


def test_every_row_is_fitted_per_seed_chosen_on_val_and_scored_once(
    trained_segmenter, trained_translator, trained_normal_synthesizer, phantom_dataset, twinray_settings, tmp_path
):
    budget = DetectionBudget(epochs=1, batch_size=4, synthetic_shares=(0.25, 0.5))
    report = run_detection_benchmark(
        twinray_settings,
        dataset=phantom_dataset,
        seeds=[0, 1],
        budget=budget,
        model=TINY,
        figure=tmp_path / "ablation.png",
        jobs=2,
    )
    check_shape(report)
    assert tuple(report["rows"]) == ROWS
    for row in LEARNED_ROWS:
        metrics = report["rows"][row]
        assert metrics["rsna_score"]["n"] == 2 and {"map", "ap40", "ap50", "ap60", "map/opacity"} <= set(metrics)
    assert report["rows"]["nothing"]["rsna_score"] == {"mean": 0.0, "sd": 0.0, "n": 1}  # the test split has lesions
    assert report["rows"]["residual_boxes"]["rsna_score"]["n"] == 1
    protocol = report["protocol"]
    assert protocol["seeds"] == [0, 1] and protocol["budget"]["epochs"] == 1
    assert protocol["models"] == {
        "segmentation": trained_segmenter.version,
        "matching-pairs": trained_translator.version,
        "normal-synthesis": trained_normal_synthesizer.version,
    }
    assert protocol["models_trained_on"] == phantom_dataset
    assert [chosen["synthetic_count"] for chosen in protocol["chosen"]["attention_synthetic"]] != []
    assert all(chosen["synthetic_count"] in (12, 24) for chosen in protocol["chosen"]["attention_synthetic"])
    for name in ("ablation.png", "ablation-attention.png"):
        with Image.open(tmp_path / name) as image:
            assert image.width > 300
    json.dumps(report, allow_nan=False)


def test_bad_requests_are_refused_before_anything_trains(twinray_settings, phantom_dataset, capsys):
    store = open_store(twinray_settings)
    write_phantom_dataset(store, "other-seed-phantoms", size=64, splits={"train": 4, "val": 2, "test": 2}, seed=2, progress=False)
    with pytest.raises(InvalidInput, match="distinct seeds"):
        run_detection_benchmark(twinray_settings, dataset=phantom_dataset, seeds=[0, 0])
    with pytest.raises(InvalidInput, match="score another split"):
        run_detection_benchmark(twinray_settings, dataset=phantom_dataset, seeds=[0], split="val")
    with pytest.raises(InvalidInput, match="has seed 2 but"):
        run_detection_benchmark(twinray_settings, dataset=phantom_dataset, seeds=[0], tools_dataset="other-seed-phantoms")
    assert main(["eval", "detection", "--seeds", "0"]) == 2
    assert "--seeds must be at least 1" in capsys.readouterr().err

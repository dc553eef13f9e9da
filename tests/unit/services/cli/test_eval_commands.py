"""`twinray eval segmentation | normal-synthesis | defect-augmentation`: with `--json` the last line of
stdout is the report in the shared shape, whatever was printed before it; without, one table code
path prints it. The evaluations are replaced by recorders (no models, no Ray)."""

from __future__ import annotations

import json
import sys

import pytest

from twinray.services.cli import reports
from twinray.services.cli.main import build_parser, main
from twinray.shared.evaluation import defect_augmentation, normal_synthesis, segmentation
from twinray.shared.evaluation.report import check_shape, evaluation_report, over_runs, published_protocol, single
from twinray.shared.synthesis import defects

SEGMENTATION = evaluation_report(
    published_protocol({"dataset": "mine", "split": "test", "images": 8, "image_size": [64, 64]}, {"segmentation": 2}),
    {"segmentation": {"mean_dice": single(0.5), "dice_lung_right": single(0.9123), "dice_heart": single(0.0877)}},
)
TWINS = evaluation_report(
    {
        **published_protocol(
            {"dataset": "mine", "split": "test", "abnormal_images": 5, "normal_images": 3},
            {"matching-pairs": [3, 5], "normal-synthesis": 4},
        ),
        "seeds": [0, 1],
    },
    {
        "do_nothing": {
            "auprc_in_lung": single(0.2),
            "auprc_in_lung/opacity": single(0.25),
            "lesion_share_in_lung/opacity": single(0.25),
        },
        "anatomy_prior": {
            "auprc_in_lung": over_runs([0.5, 0.7]),
            "lesion_recall": over_runs([0.4, 0.4]),
            "auprc_in_lung/opacity": over_runs([0.6, 0.6]),
            "lesion_recall/opacity": single(0.4),
        },
    },
)
DEFECTS = evaluation_report(
    {
        "dataset": "products",
        "splits": {"scored": {"test_defect": 100, "test_normal": 50}},
        "seeds": {"segmenter": [0, 1], "synthesis": 0},
        "budget": {"segmenter_steps": 500},
        "selection": {"rows": {"real_only@k=5": {"share": 0.5}, "real_plus_mask_blend@k=5": {"share": 0.75}}},
    },
    {
        "real_only@k=5": {"iou": over_runs([0.3, 0.5]), "pixel_auroc": over_runs([0.9, 0.9]), "kid": single(0.01)},
        "real_plus_mask_blend@k=5": {"iou": over_runs([0.5, 0.5]), "iou_gain": single(0.25), "kid": single(float("nan"))},
        "held_out_real": {"feature_distance": single(0.7)},
    },
)


@pytest.fixture
def evaluations(monkeypatch, tmp_path) -> dict:
    """Each evaluation returns its report above after printing noise to stdout and stderr."""
    monkeypatch.setenv("TWINRAY_HOME", str(tmp_path))
    called: dict = {}

    def fake(name: str, report: dict):
        def evaluate(*args, **kwargs):
            called[name] = (args, kwargs)
            print(f"{name}: working...")
            print("progress 100%", file=sys.stderr)
            return report

        return evaluate

    class Generators:
        def to(self, device: str) -> Generators:
            called["device"] = device
            return self

    monkeypatch.setattr(segmentation, "evaluate_published", fake("segmentation", SEGMENTATION))
    monkeypatch.setattr(normal_synthesis, "evaluate_published", fake("normal-synthesis", TWINS))
    monkeypatch.setattr(defect_augmentation, "evaluate_augmentation", fake("defect-augmentation", DEFECTS))
    monkeypatch.setattr(defects, "load_generators", lambda store, encoder: Generators())
    return called


@pytest.mark.parametrize(
    "command, report",
    [("segmentation", SEGMENTATION), ("normal-synthesis", TWINS), ("defect-augmentation", DEFECTS)],
)
def test_json_is_the_shared_shape_on_the_last_line(evaluations, capsys, command, report):
    assert main(["eval", command, "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0] == f"{command}: working..."  # whatever comes first stays above
    printed = json.loads(lines[-1])
    check_shape(printed)
    assert printed == report


def test_defect_augmentation_flags_become_the_config(evaluations):
    argv = ["eval", "defect-augmentation", "--k", "5", "--methods", "conditioned_ddpm", "--shares", "0.5", "--repeats", "3"]
    assert main([*argv, "--device", "cuda", "--json"]) == 0
    (store, config, generators), kwargs = evaluations["defect-augmentation"]
    assert (config.real_counts, config.methods, config.shares, config.repeats) == ((5,), ("conditioned_ddpm",), (0.5,), 3)
    assert kwargs == {"device": "cuda"} and evaluations["device"] == "cuda"


def test_the_method_names_are_the_contracts():
    """`--methods` offers the names DefectMethod and twinray.shared.synthesis.defects use, and nothing else."""
    parser = build_parser()
    assert tuple(parser.parse_args(["eval", "defect-augmentation"]).methods) == defects.METHODS
    assert defect_augmentation.AugmentationEvalConfig().methods == defects.METHODS
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "defect-augmentation", "--methods", "A"])


def test_segmentation_table_has_a_line_per_dice_score(evaluations, capsys):
    assert main(["eval", "segmentation"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert lines[0] == "segmentation v2 on mine/test (8 images)"
    assert lines[1].split() == ["segmentation"]
    assert {line.split()[0]: line.split()[1:] for line in lines[2:]} == {
        "mean_dice": ["0.5000"],
        "dice_lung_right": ["0.9123"],
        "dice_heart": ["0.0877"],
    }


def test_twin_tables_have_the_headline_metrics_per_row_then_each_class_per_metric(capsys):
    reports.print_twin_report(TWINS)
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0]
        == "healthy twins on mine/test (5 abnormal, 3 normal images; mean +- sd over seeds [0, 1]; matching-pairs v3,5, normal-synthesis v4)"
    )
    assert lines[1].split()[:3] == list(reports.TWIN_METRICS[:3])
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:4]}
    assert rows["do_nothing"][:3] == ["0.2000", "-", "-"]
    assert rows["anatomy_prior"][:6] == ["0.6000", "+-", "0.1000", "-", "0.4000", "+-"]
    assert lines[5].split() == ["do_nothing", "anatomy_prior"]
    per_class = {line.split()[0]: line.split()[1:] for line in lines[6:9]}
    assert per_class == {
        "auprc_in_lung/opacity": ["0.2500", "0.6000", "+-", "0.0000"],
        "lesion_share_in_lung/opacity": ["0.2500", "-"],
        "lesion_recall/opacity": ["-", "0.4000"],
    }


def test_defect_table_has_a_line_per_row_with_mean_and_spread(capsys):
    reports.print_defect_report(DEFECTS)
    lines = capsys.readouterr().out.splitlines()
    assert "products" in lines[0] and "100 test_defect, 50 test_normal" in lines[0] and "over 2 segmenter seed(s)" in lines[0]
    assert lines[1].split() == list(reports.DEFECT_METRICS)
    assert lines[2].split() == ["real_only@k=5", "0.4000", "+-", "0.1000", "0.9000", "+-", "0.0000", "-", "0.0100", "-"]
    assert lines[3].split() == ["real_plus_mask_blend@k=5", "0.5000", "+-", "0.0000", "-", "0.2500", "-", "-"]
    assert lines[4].split() == ["held_out_real", "-", "-", "-", "-", "0.7000"]
    assert lines[5] == "  batch share chosen on the val splits: real_only@k=5 0.5, real_plus_mask_blend@k=5 0.75"


def test_a_table_cell_is_mean_and_sd_only_over_several_runs():
    assert reports.cell(single(0.25)) == "0.2500"
    assert reports.cell(over_runs([0.2, 0.4])) == "0.3000 +- 0.1000"
    assert reports.cell(single(None)) == reports.cell(None) == "-"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "2", "--version", "3"], "--version names a published generator"),
        (["--seeds", "-1"], "one or more seeds >= 0"),
        (["--seeds", "1", "--split", "val"], "score another split than 'val'"),
        (["--seeds", "1", "--figure", "x.png"], "--figure draws a published generator's twins"),
    ],
)
def test_the_twin_benchmark_refuses_what_it_cannot_honour_before_training(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TWINRAY_HOME", str(tmp_path))
    assert main(["eval", "normal-synthesis", *args]) != 0
    assert message in capsys.readouterr().err

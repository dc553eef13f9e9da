"""The healthy-twin benchmark's rows on a tiny cxr-phantom/2 split: what each row is, in what order, and
how seeds become a mean and spread."""

from __future__ import annotations

import pytest
import torch

from twinray.shared.data.phantoms.dataset import PhantomArrays, read_phantom_split, write_phantom_dataset
from twinray.shared.data.phantoms.pathologies import PATHOLOGIES
from twinray.shared.evaluation.normal_synthesis import one_case_per_pathology
from twinray.shared.evaluation.report import check_shape, evaluation_report
from twinray.shared.evaluation.twin_benchmark import ROWS, HeldOut, benchmark_rows, no_learning_rows, twin_rows
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig
from twinray.shared.platform.storage.local import LocalStore

CPU = torch.device("cpu")
SPLITS = {"val": 8, "test": 8}


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> tuple[HeldOut, HeldOut]:
    store = LocalStore(tmp_path_factory.mktemp("store"), "test")
    write_phantom_dataset(store, "v2", size=64, splits=SPLITS, seed=3, generator="cxr-phantom/2", progress=False)
    return tuple(HeldOut.of(read_phantom_split(store, "v2", name)) for name in SPLITS)


@pytest.fixture(scope="module")
def arrays(tmp_path_factory) -> PhantomArrays:
    store = LocalStore(tmp_path_factory.mktemp("store"), "test")
    write_phantom_dataset(store, "v2", size=64, splits={"test": 24}, seed=5, generator="cxr-phantom/2", progress=False)
    return read_phantom_split(store, "v2", "test")


def test_a_figure_gets_one_case_per_pathology_class_holding_it(arrays):
    picks = one_case_per_pathology(arrays)
    assert [name for name, _ in picks] == [name for name in PATHOLOGIES if any(name == n for n, _ in picks)] and len(picks) >= 2
    for name, index in picks:
        classes = {PATHOLOGIES[c] for c in arrays.lesion_classes[index][: arrays.box_count[index]]}
        assert name in classes


def test_held_out_splits_keep_only_abnormal_images_beside_the_normals(splits):
    val, _ = splits
    assert len(val.image) == len(val.true_twin) == len(val.lesion_labels) == 4 and len(val.normal) == 4
    assert (val.lesion_labels > 0).flatten(1).any(dim=1).all()
    assert not torch.equal(val.image, val.true_twin)


def test_the_true_twin_is_a_perfect_row_and_the_image_itself_is_doing_nothing(splits):
    _, test = splits

    def oracle(images: torch.Tensor) -> torch.Tensor:  # the true twin of the abnormal images; normals as they are
        return test.true_twin if torch.equal(images, test.image) else images

    rows = twin_rows(test, {"oracle": oracle}, CPU)
    assert rows["oracle"]["auprc_in_lung"] == pytest.approx(1.0) and rows["oracle"]["lesion_recall"] == pytest.approx(1.0)
    assert rows["oracle"]["identity_change"] == 0.0
    nothing = twin_rows(test, {"do_nothing": lambda image: image}, CPU)["do_nothing"]
    assert nothing["auroc_in_lung"] == 0.5 and nothing["lesion_recall"] == 0.0 and nothing["identity_change"] == 0.0


def test_no_learning_rows_choose_the_highpass_on_val(splits):
    segmenter = AnatomySegmenter(SegmenterConfig(input_size=64, channels=(4, 8))).eval()
    rows, chosen = no_learning_rows(*splits, segmenter, CPU)
    assert list(rows) == ["do_nothing", "lung_intensity", "lung_highpass"] and chosen.startswith("highpass_")
    assert "lesion_recall" not in rows["lung_highpass"] and "auprc_in_lung/pneumothorax" in rows["lung_highpass"]


def test_seeds_become_mean_and_spread_in_the_rows_order():
    once = {"do_nothing": {"auprc_in_lung": 0.2}}
    runs = [{"anatomy_prior": {"auprc_in_lung": value}, "cyclegan": {"auprc_in_lung": 0.4}} for value in (0.5, 0.7)]
    rows = benchmark_rows(once, runs)
    assert list(rows) == [row for row in ROWS if row in rows] == ["do_nothing", "cyclegan", "anatomy_prior"]
    assert rows["anatomy_prior"]["auprc_in_lung"] == {"mean": pytest.approx(0.6), "sd": pytest.approx(0.1), "n": 2}
    assert rows["do_nothing"]["auprc_in_lung"] == {"mean": 0.2, "sd": 0.0, "n": 1}
    check_shape(evaluation_report({"splits": {}, "seeds": [0, 1], "budget": {}, "selection": ""}, rows))

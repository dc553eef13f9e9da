"""The detector trainer's own pieces, without Ray: what each variant reads from a split, the targets
it learns from, the inputs refused before Ray starts, and the in-process fit the ablation uses."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from twinray.shared.data.phantoms.dataset import read_phantom_split, write_phantom_dataset
from twinray.shared.data.synthetic_abnormal import SyntheticAbnormalShard, write_synthetic_abnormal_dataset
from twinray.shared.data.twin_residuals import TwinResidualShard, write_twin_residual_dataset
from twinray.shared.models.detection.network import DetectorConfig, LesionDetector
from twinray.shared.platform.errors import InvalidInput, NotFound
from twinray.shared.platform.storage.local import LocalStore
from twinray.training.detection import prepare
from twinray.training.detection_data import detection_config, detection_split, targets_of
from twinray.training.detection_fit import evaluate_split, fit_detector, score_split

SPLITS = {"train": 6, "val": 4}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> LocalStore:
    store = LocalStore(tmp_path_factory.mktemp("store"), "test")
    write_phantom_dataset(store, "v2", size=64, splits=SPLITS, seed=4, generator="cxr-phantom/2", progress=False)
    return store


def test_targets_are_each_images_boxes_and_pathology_classes(store):
    arrays = read_phantom_split(store, "v2", "train")
    targets = targets_of(arrays)
    assert len(targets) == len(arrays)
    for i, target in enumerate(targets):
        count = int(arrays.box_count[i])
        assert target["boxes"].shape == (count, 4) and target["labels"].shape == (count,)
        np.testing.assert_array_equal(target["labels"].numpy(), arrays.lesion_classes[i, :count])
        assert target["labels"].dtype == torch.int64 and (target["boxes"][:, 2:] >= target["boxes"][:, :2]).all()
    assert any(len(t["boxes"]) == 0 for t in targets) and any(len(t["boxes"]) > 0 for t in targets)


def test_the_variant_flag_sets_the_detector_and_prepare_takes_the_datasets_size(store):
    config = detection_config(variant="anatomy", dataset="v2", model=DetectorConfig(fpn_channels=16))
    assert config.model.variant == "anatomy" and config.model.fpn_channels == 16
    with pytest.raises(NotFound, match="segmentation"):  # no segmenter published in this store
        prepare(store, config)
    prepared = prepare(store, detection_config(dataset="v2"))
    assert prepared.config.model.input_size == 64 and prepared.training == {}


@pytest.mark.parametrize("variant", ["concat", "attention"])
def test_residual_variants_need_a_stored_residual_dataset(store, variant):
    with pytest.raises(InvalidInput, match="--residuals"):
        prepare(store, detection_config(variant=variant, dataset="v2"))
    with pytest.raises(NotFound):
        prepare(store, detection_config(variant=variant, dataset="v2", residuals="nowhere"))


def test_a_split_is_scored_at_its_best_confidence_threshold(store):
    data = detection_split(store, detection_config(dataset="v2"), "val", None)
    assert data.image.shape == (SPLITS["val"], 1, 64, 64) and data.residual is None and data.anatomy is None
    model = LesionDetector(DetectorConfig(input_size=64, fpn_channels=16, detections_per_image=5))
    scores = evaluate_split(model, data, torch.device("cpu"))
    assert set(scores) == {"rsna_score", "score_threshold", "map", "ap40", "ap50", "ap60"}
    assert 0.0 <= scores["rsna_score"] <= 1.0 and 0.05 <= scores["score_threshold"] <= 0.95


def _synthetic_dataset(store, name: str, dataset: str, model: dict, count: int = 3) -> None:
    """A stored synthetic abnormal dataset of `count` images, each with one box of class i % 4."""
    boxes, classes = np.zeros((count, 6, 4), np.float32), np.full((count, 6), -1, np.int8)
    boxes[:, 0], classes[:, 0] = [8, 8, 20, 24], np.arange(count) % 4
    shard = SyntheticAbnormalShard(
        image=np.full((count, 64, 64), 30000, np.uint16),
        residual=np.full((count, 64, 64), 0.25, np.float16),
        boxes=boxes,
        box_count=np.ones(count, np.int32),
        lesion_classes=classes,
        source_index=np.arange(count),
        normal_index=np.arange(count),
    )
    source = {"dataset": dataset, "split": "train", "manifest_sha256": "0" * 64}
    segmenter = {**model, "name": "segmentation"}
    write_synthetic_abnormal_dataset(
        store,
        name,
        [shard],
        size=64,
        max_boxes=6,
        source=source,
        model=model,
        segmenter=segmenter,
        seed=0,
        count=count,
        method={},
    )


def test_synthetic_images_join_the_training_split_only_when_they_fit_the_run(store):
    generator = {"name": "normal-synthesis", "version": 1, "weights_sha256": "1" * 64}
    translator = {"name": "matching-pairs", "version": 1, "weights_sha256": "2" * 64}
    _synthetic_dataset(store, "syn", "v2", generator)
    _synthetic_dataset(store, "syn-elsewhere", "other", generator)
    residual = np.zeros((SPLITS["train"], 64, 64), np.float16)
    shards = {"train": [TwinResidualShard(residual=residual, index=np.arange(SPLITS["train"]))]}
    write_twin_residual_dataset(
        store, "res-cyclegan", shards, size=64, source={"dataset": "v2", "manifest_sha256": "0" * 64}, model=translator
    )

    prepared = prepare(store, detection_config(dataset="v2", synthetic="syn", synthetic_count=2))
    entry = prepared.training["synthetic_abnormal"]
    assert (entry["name"], entry["count"], entry["model"]) == ("syn", 2, generator)
    for fields, message in (
        ({"synthetic": "syn"}, "--synthetic NAME with --synthetic-count N > 0"),
        ({"synthetic_count": 2}, "--synthetic NAME with --synthetic-count N > 0"),
        ({"synthetic": "syn", "synthetic_count": 4}, "with 3 images, --synthetic-count asks 4"),
        ({"synthetic": "syn-elsewhere", "synthetic_count": 1}, "made from 'other', not 'v2'"),
        ({"variant": "concat", "residuals": "res-cyclegan", "synthetic": "syn", "synthetic_count": 1}, "use the same twin model"),
    ):
        with pytest.raises(InvalidInput, match=message):
            prepare(store, detection_config(**{"dataset": "v2", **fields}))

    config = detection_config(variant="concat", dataset="v2", residuals="res-cyclegan", synthetic="syn", synthetic_count=2)
    train = detection_split(store, config, "train", None)
    assert train.image.shape == (SPLITS["train"] + 2, 1, 64, 64) and len(train.targets) == SPLITS["train"] + 2
    assert (train.residual[: SPLITS["train"]] == 0).all() and (train.residual[SPLITS["train"] :] == 0.25).all()
    assert [t["labels"].tolist() for t in train.targets[-2:]] == [[0], [1]]
    assert train.targets[-1]["boxes"].tolist() == [[8, 8, 20, 24]]
    baseline = dataclasses.replace(config, model=dataclasses.replace(config.model, variant="baseline"))
    assert len(detection_split(store, baseline, "val", None).image) == SPLITS["val"], "val never sees synthetic images"
    assert len(detection_split(store, baseline, "train", None).targets) == SPLITS["train"] + 2


def test_an_in_process_fit_keeps_the_best_val_epoch_and_scores_at_its_threshold(store):
    tiny = DetectorConfig(input_size=64, fpn_channels=16, detections_per_image=5, attention_hidden=4, variant="attention")
    residuals = {split: np.full((count, 64, 64), 0.1, np.float16) for split, count in SPLITS.items()}
    write_twin_residual_dataset(
        store,
        "res-fit",
        {split: [TwinResidualShard(residual=r, index=np.arange(len(r)))] for split, r in residuals.items()},
        size=64,
        source={"dataset": "v2", "manifest_sha256": "0" * 64},
        model={"name": "normal-synthesis", "version": 1, "weights_sha256": "1" * 64},
    )
    config = detection_config("attention", dataset="v2", residuals="res-fit", epochs=2, batch_size=2, model=tiny)
    train, val = (detection_split(store, config, split, None) for split in ("train", "val"))
    before = {k: v.clone() for k, v in LesionDetector(tiny).state_dict().items()}
    fitted = fit_detector(config, train, val, torch.device("cpu"), "test")
    assert fitted.epoch in (1, 2) and not fitted.model.training
    assert any(not torch.equal(before[k], v) for k, v in fitted.model.state_dict().items() if v.is_floating_point())
    scored = score_split(fitted.model, val, torch.device("cpu"), fitted.val["score_threshold"])
    assert {"rsna_score", "map", "ap40", "ap50", "ap60"} <= set(scored)
    assert {f"map/{name}" for name in ("opacity", "nodule", "effusion", "pneumothorax")} <= set(scored)
    with pytest.raises(ValueError, match="no batch of 8"):
        fit_detector(dataclasses.replace(config, batch_size=8), train, val, torch.device("cpu"))

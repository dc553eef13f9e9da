"""The detector trainer's own pieces, without Ray: what each variant reads from a split, the targets
it learns from, and the inputs refused before Ray starts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from twinray.shared.data.phantoms.dataset import read_phantom_split, write_phantom_dataset
from twinray.shared.models.detection.network import DetectorConfig, LesionDetector
from twinray.shared.platform.errors import InvalidInput, NotFound
from twinray.shared.platform.storage.local import LocalStore
from twinray.training.detection import detection_config, detection_split, evaluate_split, prepare, targets_of

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

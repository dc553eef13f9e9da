"""Synthetic abnormal images: a lesion's change carried into another person's lungs, by hand-checkable
16 px cases, and the written dataset (tiny untrained published models on a tiny phantom dataset):
boxes by construction, classes kept, residuals of the same twin, reproducible from the seed."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from twinray.shared.data.anatomy import LUNG_LEFT, LUNG_RIGHT
from twinray.shared.data.phantoms.dataset import read_phantom_split, write_phantom_dataset
from twinray.shared.data.synthetic_abnormal import read_synthetic_abnormal, read_synthetic_abnormal_manifest
from twinray.shared.models.matching_pairs.network import ResidualTranslator, TranslatorConfig, translator_twin
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig
from twinray.shared.platform.errors import InvalidInput, NotFound
from twinray.shared.platform.imaging import unit_images
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import LocalStore
from twinray.shared.synthesis.synthetic_abnormal import SUPPORT_THRESHOLD, carry_lesions, write_synthetic_abnormal

S = 16


def _anatomy(right: tuple[int, int, int, int], left: tuple[int, int, int, int] | None) -> torch.Tensor:
    """An anatomy map with the right lung (image left) and the left lung as rectangles x0, y0, x1, y1."""
    anatomy = torch.zeros((S, S), dtype=torch.int64)
    for label, (x0, y0, x1, y1) in ((LUNG_RIGHT, right), (LUNG_LEFT, left)) if left else ((LUNG_RIGHT, right),):
        anatomy[y0:y1, x0:x1] = label
    return anatomy


SOURCE = _anatomy((1, 2, 7, 12), (9, 2, 15, 12))
NORMAL_ANATOMY = _anatomy((2, 4, 8, 14), (8, 0, 16, 16))  # right lung moved by (+1, +2); left lung 8 x 16 px
NORMAL = torch.full((S, S), 0.5)


def _carry(change: torch.Tensor, boxes: list, classes: list, normal_anatomy: torch.Tensor = NORMAL_ANATOMY):
    return carry_lesions(change, torch.tensor(boxes, dtype=torch.float32), torch.tensor(classes), SOURCE, NORMAL, normal_anatomy)


def test_a_change_in_a_box_moves_with_its_lung_and_its_box_is_what_was_drawn() -> None:
    change = torch.zeros((S, S))
    change[4, 3] = change[4, 4] = change[5, 3] = 0.2  # the lesion, in box x 2..5, y 3..6 of the right lung
    change[3, 2] = SUPPORT_THRESHOLD / 2  # negligible: not carried, not in the box
    change[10, 12] = 0.3  # outside every box: not carried
    image, boxes, classes = _carry(change, [[2, 3, 5, 6]], [2])
    # centre (3.5, 4.5) -> (2 + 2.5 * 6/6, 4 + 2.5 * 10/10) = (4.5, 6.5): moved by dx 1, dy 2
    expected = NORMAL.clone()
    expected[6, 4] = expected[6, 5] = expected[7, 4] = 0.7
    torch.testing.assert_close(image, expected)
    assert boxes.tolist() == [[4, 6, 6, 8]] and classes.tolist() == [2]


def test_the_left_lung_stays_the_left_lung_and_its_size_sets_the_position() -> None:
    change = torch.zeros((S, S))
    change[8, 12] = -0.25  # density lost: carried with its sign
    image, boxes, classes = _carry(change, [[12, 8, 14, 10]], [3])
    # centre (13, 9) -> (8 + 4 * 8/6, 0 + 7 * 16/10) = (13.33, 11.2): dx 0, dy 2
    assert boxes.tolist() == [[12, 10, 13, 11]] and classes.tolist() == [3]
    assert image[10, 12] == pytest.approx(0.25) and (image != NORMAL).sum() == 1


def test_nothing_is_added_outside_the_lungs_and_the_box_shrinks_to_what_is_inside() -> None:
    change = torch.zeros((S, S))
    change[2:4, 1:3] = 0.1  # a 2 x 2 lesion at the right lung's top-left corner
    narrow = NORMAL_ANATOMY.clone()
    narrow[4:6, 2] = 0  # the normal's right lung loses two pixels of its edge (its bounding box stays)
    image, boxes, _ = _carry(change, [[1, 2, 3, 4]], [0], narrow)
    # centre (2, 3) -> (2 + 1 * 6/6, 4 + 1 * 10/10) = (3, 4): moved by (+1, +2) to x 2..3, y 4..5; x 2 is not lung there
    assert boxes.tolist() == [[3, 4, 4, 6]]
    lungs = (narrow == LUNG_RIGHT) | (narrow == LUNG_LEFT)
    assert (image[~lungs] == 0.5).all() and (image > 0.5).sum() == 2
    torch.testing.assert_close(image[4:6, 3], torch.full((2,), 0.6))


def test_boxes_of_one_lung_move_together_adding_their_overlap_once_and_unplaceable_lesions_are_dropped() -> None:
    change = torch.zeros((S, S))
    change[4:6, 3:5] = 0.2
    change[14, 8] = 0.2  # in a box over no lung: nowhere to place it
    image, boxes, classes = _carry(change, [[2, 3, 5, 6], [3, 4, 5, 6], [7, 13, 10, 16]], [0, 1, 2])
    # the union of the right lung's boxes is the first box: moved by (+1, +2) as in the first case
    assert boxes.tolist() == [[4, 6, 6, 8], [4, 6, 6, 8]] and classes.tolist() == [0, 1]
    assert image.max() == pytest.approx(0.7) and (image > 0.5).sum() == 4
    no_right_lung = _anatomy((0, 0, 0, 0), (8, 0, 16, 16))
    _, boxes, _ = _carry(change, [[2, 3, 5, 6]], [0], no_right_lung)
    assert boxes.shape == (0, 4)


def test_the_image_stays_in_the_unit_range() -> None:
    change = torch.zeros((S, S))
    change[4, 3] = 0.9
    image, boxes, _ = _carry(change, [[2, 3, 5, 6]], [0])
    assert image.max() == 1.0 and boxes.tolist() == [[4, 6, 5, 7]]


def test_bad_inputs_are_refused() -> None:
    change = torch.zeros((S, S))
    with pytest.raises(ValueError, match="one \\(H, W\\) shape"):
        carry_lesions(change[:8], torch.zeros((1, 4)), torch.zeros(1), SOURCE, NORMAL, NORMAL_ANATOMY)
    with pytest.raises(ValueError, match="boxes \\(L, 4\\) and classes \\(L,\\)"):
        carry_lesions(change, torch.zeros((1, 3)), torch.zeros(1), SOURCE, NORMAL, NORMAL_ANATOMY)
    with pytest.raises(ValueError, match="boxes \\(L, 4\\) and classes \\(L,\\)"):
        carry_lesions(change, torch.zeros((2, 4)), torch.zeros(1), SOURCE, NORMAL, NORMAL_ANATOMY)
    with pytest.raises(ValueError, match="threshold must be positive"):
        carry_lesions(change, torch.zeros((1, 4)), torch.zeros(1), SOURCE, NORMAL, NORMAL_ANATOMY, threshold=0.0)


# The written dataset, with tiny untrained models: a translator whose head changes the images, and a
# segmenter whose random labels still hold both lungs.
DATASET = "tiny"


def _publish(registry: ModelRegistry, name: str, state: dict, config: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    registry.publish(name, weights=buffer.getvalue(), config=config, metrics={}, training={}, card="test")


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[LocalStore, ResidualTranslator]:
    store = LocalStore(tmp_path_factory.mktemp("store"), "twinray")
    write_phantom_dataset(store, DATASET, size=64, splits={"train": 8}, seed=3, generator="cxr-phantom/2", progress=False)
    registry = ModelRegistry(store)
    torch.manual_seed(0)
    segmenter = AnatomySegmenter(SegmenterConfig(input_size=32, channels=(4, 8)))
    _publish(registry, "segmentation", segmenter.state_dict(), segmenter.config.to_dict())
    translator = ResidualTranslator(TranslatorConfig(input_size=32, channels=4, n_res_blocks=1)).eval()
    torch.nn.init.normal_(translator.head.conv.weight, std=0.05)
    state = translator.state_dict()
    _publish(registry, "matching-pairs", {"abnormal_to_normal": state, "normal_to_abnormal": state}, translator.config.to_dict())
    return store, translator


def _write(store: LocalStore, **overrides) -> dict:
    arguments = {"model": "matching-pairs", "dataset": DATASET, "count": 5, "seed": 1, "shard_size": 2, "progress": False}
    return write_synthetic_abnormal(store, **{**arguments, **overrides})


def test_the_written_dataset_holds_boxed_lesions_carried_into_normals_with_their_twin_residuals(published) -> None:
    store, translator = published
    manifest = _write(store)
    name = "tiny-synthetic-matching-pairs-v1-seed1-n5"
    assert manifest["name"] == name and read_synthetic_abnormal_manifest(store, name) == manifest
    assert manifest["source"]["dataset"] == DATASET and manifest["model"]["name"] == "matching-pairs"
    assert manifest["segmenter"]["version"] == 1 and manifest["method"]["support_threshold"] == SUPPORT_THRESHOLD
    data, phantoms = read_synthetic_abnormal(store, name), read_phantom_split(store, DATASET, "train")
    assert len(data) == 5 and len(manifest["splits"]["train"]["shards"]) == 3
    assert (phantoms.box_count[data.source_index] > 0).all() and (phantoms.box_count[data.normal_index] == 0).all()
    image, normal = unit_images(data.image), unit_images(phantoms.image[data.normal_index])
    for i in range(len(data)):
        boxes = data.boxes_of(i).astype(int)
        assert len(boxes) >= 1 and set(data.lesion_classes[i, : len(boxes)]) <= set(phantoms.lesion_classes[data.source_index[i]])
        assert (data.lesion_classes[i, len(boxes) :] == -1).all()
        inside = torch.zeros((64, 64), dtype=torch.bool)
        for x0, y0, x1, y1 in boxes:
            inside[y0:y1, x0:x1] = True
        assert not (image[i, 0] != normal[i, 0])[~inside].any(), "nothing is added outside the boxes"
    with torch.no_grad():
        twin = translator_twin(translator, 32)
        expected = torch.cat([image[s : s + 2] - twin(image[s : s + 2]) for s in range(0, 5, 2)])[:, 0].numpy()
    assert np.abs(expected).max() > 1e-2 and np.allclose(data.residual, expected, atol=2.0**-11)


def test_the_seed_reproduces_the_images_and_a_longer_dataset_starts_with_a_shorter_one(published) -> None:
    store, _ = published
    first, again = _write(store, name="a"), _write(store, name="b")
    longer, other = _write(store, name="c", count=7), _write(store, name="d", seed=2)
    read = {m["name"]: read_synthetic_abnormal(store, m["name"]) for m in (first, again, longer, other)}
    np.testing.assert_array_equal(read["a"].image, read["b"].image)
    np.testing.assert_array_equal(read["c"].image[:5], read["a"].image)
    np.testing.assert_array_equal(read_synthetic_abnormal(store, "c", count=5).boxes, read["a"].boxes)
    assert not np.array_equal(read["d"].image, read["a"].image)
    assert _write(store, name="a") == first, "the same parameters reuse what is stored"
    with pytest.raises(InvalidInput, match="already exists with other parameters"):
        _write(store, name="a", seed=9)


def test_bad_requests_and_reads_are_refused(published) -> None:
    store, _ = published
    with pytest.raises(InvalidInput, match="count must be an integer >= 1, got 0"):
        _write(store, count=0)
    with pytest.raises(InvalidInput, match="not 'segmentation'"):
        _write(store, model="segmentation")
    with pytest.raises(NotFound, match="no phantom dataset 'absent'"):
        _write(store, dataset="absent")
    with pytest.raises(NotFound, match="twinray data synthetic"):
        read_synthetic_abnormal(store, "never-written")
    name = _write(store, name="small", count=2)["name"]
    with pytest.raises(InvalidInput, match="holds 2 images, 3 were asked"):
        read_synthetic_abnormal(store, name, count=3)

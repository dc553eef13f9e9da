import math

import pytest
import torch
from torchvision.ops import box_iou

from twinray.shared.evaluation.detection_metrics import (
    IOU_THRESHOLDS,
    average_precision,
    best_threshold_rsna,
    detection_metrics,
    per_class_map,
    rsna_image_score,
    rsna_score,
)

NONE = torch.zeros(0, 4)
NO_SCORES = torch.zeros(0)


def boxes(*corners: tuple[float, float, float, float]) -> torch.Tensor:
    return torch.tensor(corners, dtype=torch.float32).view(-1, 4)


def scores(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


SQUARE = (0, 0, 10, 10)
HALF = (0, 0, 10, 5)  # inside SQUARE: IoU = 50 / 100 = 0.5 exactly
FAR = (50, 50, 60, 60)  # overlaps nothing


def test_thresholds_are_the_eight_rsna_ones_ending_at_0_75():
    assert IOU_THRESHOLDS == (0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75)


def test_one_perfect_prediction_scores_one():
    image = (boxes(SQUARE), scores(0.9), boxes(SQUARE))
    assert rsna_image_score(*image) == 1.0
    assert average_precision([image], 0.75) == 1.0


def test_an_iou_of_exactly_one_half_is_not_greater_than_the_0_5_threshold():
    assert float(box_iou(boxes(HALF), boxes(SQUARE))) == 0.5
    # IoU 0.5 > t only for t = 0.40, 0.45: score 1 there, 0 at the six others -> 2/8.
    assert rsna_image_score(boxes(HALF), scores(0.9), boxes(SQUARE)) == 0.25


def test_a_false_positive_at_lower_confidence_halves_every_threshold():
    # TP 1, FP 1, FN 0 at every threshold -> 1 / (1 + 1 + 0) = 1/2.
    score = rsna_image_score(boxes(SQUARE, FAR), scores(0.9, 0.2), boxes(SQUARE))
    assert score == pytest.approx(0.5)


def test_a_missed_true_box_counts_as_a_false_negative():
    # TP 1, FP 0, FN 1 -> 1/2; nothing predicted at all -> 0.
    assert rsna_image_score(boxes(SQUARE), scores(0.9), boxes(SQUARE, FAR)) == pytest.approx(0.5)
    assert rsna_image_score(NONE, NO_SCORES, boxes(SQUARE)) == 0.0


def test_an_image_without_true_boxes_scores_zero_with_a_prediction_and_is_left_out_without():
    assert rsna_image_score(boxes(FAR), scores(0.1), NONE) == 0.0
    assert rsna_image_score(NONE, NO_SCORES, NONE) is None
    perfect = (boxes(SQUARE), scores(0.9), boxes(SQUARE))
    empty = (NONE, NO_SCORES, NONE)
    false_alarm = (boxes(FAR), scores(0.1), NONE)
    # Left out: (1) / 1 = 1, not (1 + 0) / 2; a false alarm counts: (1 + 0) / 2.
    assert rsna_score([perfect, empty]) == 1.0
    assert rsna_score([perfect, false_alarm]) == pytest.approx(0.5)
    assert math.isnan(rsna_score([empty, empty]))


def test_two_predictions_on_one_true_box_match_once():
    # The first takes the box, the duplicate is a FP: 1 / (1 + 1 + 0) = 1/2.
    score = rsna_image_score(boxes(SQUARE, SQUARE), scores(0.9, 0.8), boxes(SQUARE))
    assert score == pytest.approx(0.5)


def test_a_confident_prediction_overlapping_nothing_steals_nothing():
    # FAR goes first but matches nothing; SQUARE still matches: TP 1, FP 1 -> 1/2, not 0.
    score = rsna_image_score(boxes(FAR, SQUARE), scores(0.9, 0.1), boxes(SQUARE))
    assert score == pytest.approx(0.5)


def test_a_confident_overlapping_prediction_takes_the_match_first():
    # True T1 = (0,0,10,10), T2 = (0,5,10,15). P = (0,2,10,12): IoU 80/120 = 2/3 with T1, 70/130 = 7/13
    # (0.54) with T2. Q = T1: IoU 1 with T1, 50/150 = 1/3 with T2. At t = 0.5:
    # P first takes T1 (its best), Q finds only T2 at 1/3: TP 1, FP 1, FN 1 -> 1/3.
    # Q first takes T1, P takes T2 at 7/13 > 0.5: TP 2 -> 1.
    true = boxes((0, 0, 10, 10), (0, 5, 10, 15))
    predicted = boxes((0, 2, 10, 12), (0, 0, 10, 10))
    assert rsna_image_score(predicted, scores(0.9, 0.1), true, thresholds=(0.5,)) == pytest.approx(1 / 3)
    assert rsna_image_score(predicted, scores(0.1, 0.9), true, thresholds=(0.5,)) == 1.0


def test_a_prediction_takes_the_true_box_of_highest_iou_not_the_first():
    # True T1 = (0,0,10,10), T2 = (0,5,10,15). P = T2 (IoU 1/3 with T1), then Q = (0,0,10,4) (IoU 0.4 with
    # T1, 0 with T2). At t = 0.3, P takes T2 (IoU 1), leaving T1 to Q: TP 2 -> 1. Taking T1, the first
    # box over the threshold, would leave Q nothing: 1/3.
    true = boxes((0, 0, 10, 10), (0, 5, 10, 15))
    predicted = boxes((0, 5, 10, 15), (0, 0, 10, 4))
    assert rsna_image_score(predicted, scores(0.9, 0.5), true, thresholds=(0.3,)) == 1.0


def test_average_precision_integrates_the_precision_envelope_of_a_pooled_ranking():
    # 3 true boxes: two in image a, one in image b. Ranked by score: a SQUARE (TP), b FAR (FP),
    # b SQUARE (TP), a (20,20,30,30) (TP).
    # precision 1, 1/2, 2/3, 3/4; recall 1/3, 1/3, 2/3, 1; envelope 1, 3/4, 3/4, 3/4.
    # AP = 1/3 * 1 + 1/3 * 3/4 + 1/3 * 3/4 = 5/6 (29/36 without the envelope).
    other = (20, 20, 30, 30)
    image_a = (boxes(other, SQUARE), scores(0.6, 0.9), boxes(SQUARE, other))
    image_b = (boxes(SQUARE, FAR), scores(0.7, 0.8), boxes(SQUARE))
    assert average_precision([image_a, image_b], 0.5) == pytest.approx(5 / 6)


def test_average_precision_counts_missed_boxes_and_needs_true_boxes():
    # One of two true boxes found, first in rank: AP = 1/2 * 1.
    assert average_precision([(boxes(SQUARE), scores(0.9), boxes(SQUARE, FAR))], 0.5) == pytest.approx(0.5)
    assert average_precision([(NONE, NO_SCORES, boxes(SQUARE))], 0.5) == 0.0
    assert math.isnan(average_precision([(boxes(FAR), scores(0.9), NONE)], 0.5))


def test_average_precision_matches_an_iou_equal_to_the_threshold():
    image = (boxes(HALF), scores(0.9), boxes(SQUARE))
    assert average_precision([image], 0.5) == 1.0
    assert average_precision([image], 0.55) == 0.0


def test_detection_metrics_reports_the_five_keys():
    # IoU 0.5: RSNA (> t) matches at 0.40, 0.45 -> 2/8; AP (>= t) at 0.40, 0.45, 0.50 -> mAP 3/8.
    metrics = detection_metrics([(boxes(HALF), scores(0.9), boxes(SQUARE)), (NONE, NO_SCORES, NONE)])
    assert metrics == {"rsna_score": 0.25, "ap40": 1.0, "ap50": 1.0, "ap60": 0.0, "map": 0.375}


@pytest.mark.parametrize(
    ("pred_boxes", "pred_scores", "true_boxes", "message"),
    [
        (torch.zeros(4), scores(0.9), NONE, r"pred_boxes must have shape \(K, 4\)"),
        (boxes(SQUARE), scores(0.9), torch.zeros(1, 5), r"true_boxes must have shape \(K, 4\)"),
        (boxes(SQUARE), scores(0.9, 0.8), NONE, r"pred_scores must have shape \(1,\)"),
        (boxes(SQUARE), torch.zeros(1, 1), NONE, r"pred_scores must have shape \(1,\)"),
        (boxes((10, 0, 0, 10)), scores(0.9), NONE, "x2 >= x1"),
        (boxes(SQUARE), scores(0.9), boxes((0, 10, 10, 0)), "y2 >= y1"),
        (boxes((0, 0, math.nan, 10)), scores(0.9), NONE, "pred_boxes holds NaN"),
        (boxes(SQUARE), scores(math.inf), NONE, "pred_scores holds NaN or infinite"),
    ],
)
def test_bad_inputs_raise_a_value_error(pred_boxes, pred_scores, true_boxes, message):
    with pytest.raises(ValueError, match=message):
        rsna_image_score(pred_boxes, pred_scores, true_boxes)


def test_dataset_errors_name_the_image():
    good = (boxes(SQUARE), scores(0.9), boxes(SQUARE))
    bad = (boxes(SQUARE), scores(0.9, 0.8), boxes(SQUARE))
    for metric in (rsna_score, lambda images: average_precision(images, 0.5), detection_metrics):
        with pytest.raises(ValueError, match="^image 1: pred_scores"):
            metric([good, bad])


def test_the_rsna_score_is_read_at_the_confidence_threshold_best_on_these_images():
    # A true box found at 0.9 and a false one at 0.3: kept at t <= 0.30, each IoU threshold scores
    # 1 / (1 + 1 + 0) = 0.5; from t = 0.35 only the hit is kept and every threshold scores 1.
    image = (boxes(SQUARE, FAR), scores(0.9, 0.3), boxes(SQUARE))
    assert best_threshold_rsna([image]) == (1.0, 0.35)
    assert best_threshold_rsna([image], thresholds=(0.1, 0.2)) == (0.5, 0.1)
    # Nothing left to score (one image, no true box, nothing kept above 0.5): NaN at the lowest threshold.
    empty = (boxes(FAR), scores(0.4), NONE)
    score, threshold = best_threshold_rsna([empty], thresholds=(0.5, 0.6))
    assert math.isnan(score) and threshold == 0.5


def labels(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def test_per_class_map_scores_each_class_against_its_own_boxes():
    # Class 0: its one true box is found first (AP 1 at every IoU). Class 1: a true box of class 1 is
    # predicted as class 0 (no class-1 hit), and the class-1 prediction lands far away: AP 0.
    # Class 2 has no true box: NaN.
    image = (boxes(SQUARE, SQUARE, FAR), scores(0.9, 0.8, 0.7), labels(0, 0, 1), boxes(SQUARE, (20, 20, 30, 30)), labels(0, 1))
    out = per_class_map([image], ["a", "b", "c"])
    assert out["map/a"] == 1.0 and out["map/b"] == 0.0 and math.isnan(out["map/c"])
    assert list(out) == ["map/a", "map/b", "map/c"]

import math

import pytest
import torch

from twinray.shared.evaluation.residual_metrics import (
    false_change,
    identity_change,
    lesion_recall,
    localisation,
    per_class,
    pixel_classes,
    score_map,
    score_twin,
)

CLASSES = ("opacity", "nodule", "effusion", "pneumothorax")
SIZE = 32


def lungs(n: int) -> torch.Tensor:
    """Two rectangular lung fields per image."""
    mask = torch.zeros(n, SIZE, SIZE, dtype=torch.bool)
    mask[:, 4:28, 3:14] = True
    mask[:, 4:28, 18:29] = True
    return mask


def phantoms() -> dict[str, torch.Tensor]:
    """Four abnormal images, one class each (pneumothorax darker than its twin), and two normal ones."""
    generator = torch.Generator().manual_seed(0)
    true_twin = 0.3 + 0.2 * torch.rand(4, 1, SIZE, SIZE, generator=generator)
    labels = torch.zeros(4, SIZE, SIZE, dtype=torch.long)
    boxes = [(8, 14, 5, 11), (10, 13, 20, 23), (22, 28, 4, 13), (5, 12, 24, 29)]
    for index, (top, bottom, left, right) in enumerate(boxes):
        labels[index, top:bottom, left:right] = 1
    change = torch.tensor([0.3, 0.3, 0.25, -0.2]).view(4, 1, 1, 1)
    image = true_twin + change * (labels > 0)[:, None]
    lesion_class = torch.tensor([[0], [1], [2], [3]])
    normal_image = 0.3 + 0.2 * torch.rand(2, 1, SIZE, SIZE, generator=generator)
    return {
        "image": image,
        "true_twin": true_twin,
        "lesion_labels": labels,
        "lesion_class": lesion_class,
        "lung_mask": lungs(4),
        "normal_image": normal_image,
    }


def test_a_perfect_twin_recalls_and_localises_everything_including_density_loss():
    case = phantoms()
    twin = case["true_twin"]
    scores = score_twin(
        case["image"],
        twin,
        case["true_twin"],
        case["lesion_labels"],
        case["lesion_class"],
        case["lung_mask"],
        case["normal_image"],
        case["normal_image"],
        CLASSES,
    )
    assert scores["lesion_recall"] == pytest.approx(1.0)
    for key in ("auroc", "auprc", "auroc_in_lung", "auprc_in_lung"):
        assert scores[key] == pytest.approx(1.0)
        for name in CLASSES:
            assert scores[f"{key}/{name}"] == pytest.approx(1.0)
    assert scores["false_change"] == 0 and scores["false_change_in_lung"] == 0
    assert scores["identity_change"] == 0
    assert scores["ssim"] > 0.999


def test_a_signed_residual_would_miss_the_pneumothorax_that_the_absolute_one_finds():
    case = phantoms()
    pneumothorax = slice(3, 4)
    signed = case["image"][pneumothorax] - case["true_twin"][pneumothorax]
    labels, lung = case["lesion_labels"][pneumothorax], case["lung_mask"][pneumothorax]
    assert localisation(signed.abs(), labels, lung)["auroc_in_lung"] == pytest.approx(1.0)
    assert localisation(signed, labels, lung)["auroc_in_lung"] < 0.5


def test_doing_nothing_recalls_nothing_and_ranks_at_chance():
    case = phantoms()
    image = case["image"]
    scores = score_twin(
        image,
        image,
        case["true_twin"],
        case["lesion_labels"],
        case["lesion_class"],
        case["lung_mask"],
        case["normal_image"],
        case["normal_image"],
        CLASSES,
    )
    assert scores["lesion_recall"] == pytest.approx(0.0)
    assert scores["auroc"] == pytest.approx(0.5) and scores["auroc_in_lung"] == pytest.approx(0.5)
    assert scores["auprc"] == pytest.approx(scores["lesion_share"])
    assert scores["auprc_in_lung"] == pytest.approx(scores["lesion_share_in_lung"])
    lesion, lung = case["lesion_labels"] > 0, case["lung_mask"]
    assert scores["lesion_share_in_lung"] == pytest.approx(float((lesion & lung).sum() / lung.sum()))
    assert scores["lesion_share"] == pytest.approx(float(lesion.float().mean()))


def test_lesion_recall_of_a_partial_and_of_a_harmful_twin():
    case = phantoms()
    image, true_twin, lesion = case["image"], case["true_twin"], case["lesion_labels"] > 0
    disease = image - true_twin
    assert lesion_recall(image, true_twin + 0.5 * disease, true_twin, lesion) == pytest.approx(0.5)
    assert lesion_recall(image, image + disease, true_twin, lesion) == pytest.approx(-1.0)
    pneumothorax = slice(3, 4)  # density loss alone
    half = true_twin[pneumothorax] + 0.5 * disease[pneumothorax]
    assert lesion_recall(image[pneumothorax], half, true_twin[pneumothorax], lesion[pneumothorax]) == pytest.approx(0.5)


def test_lesion_recall_is_pooled_over_lesion_pixels_so_a_faint_lesion_weighs_little():
    case = phantoms()
    image, true_twin, lesion = case["image"].clone(), case["true_twin"], case["lesion_labels"] > 0
    disease = (image - true_twin).abs()[:, 0]
    image[0] = true_twin[0] + 0.01 * (image[0] - true_twin[0])  # image 0's lesion is faint
    twin = true_twin.clone()
    twin[0] += 0.05 * lesion[0]  # and its twin is off by more than that lesion: per image, far below zero
    kept = float(disease[1:][lesion[1:]].sum())
    faint = 0.01 * float(disease[0][lesion[0]].sum())
    expected = 1.0 - 0.05 * float(lesion[0].sum()) / (kept + faint)
    assert lesion_recall(image, twin, true_twin, lesion) == pytest.approx(expected, rel=1e-4)
    assert math.isnan(lesion_recall(true_twin, twin, true_twin, lesion))


def test_pixels_outside_the_lungs_do_not_enter_the_in_lung_metrics():
    case = phantoms()
    lesion, lung = case["lesion_labels"] > 0, case["lung_mask"]
    lesion[1, 0:3, 0:3] = True  # a lesion outside the lung fields
    score = torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    noisy_outside = torch.where(lung[:, None], score, torch.rand(score.shape, generator=torch.Generator().manual_seed(2)))
    inside, noisy = localisation(score, lesion, lung), localisation(noisy_outside, lesion, lung)
    for key in ("auroc_in_lung", "auprc_in_lung", "lesion_share_in_lung", "lesion_inside_lung"):
        assert inside[key] == noisy[key]
    assert inside["auroc"] != noisy["auroc"]
    assert inside["lesion_inside_lung"] == pytest.approx(float((lesion & lung).sum() / lesion.sum()))
    assert inside["lesion_inside_lung"] < 1


def test_false_change_separates_the_lungs_from_the_rest_and_ignores_the_lesions():
    case = phantoms()
    true_twin, lesion, lung = case["true_twin"], case["lesion_labels"] > 0, case["lung_mask"]
    twin = true_twin + 0.5 * (lesion & lung)[:, None]  # lesion pixels: not a false change
    twin[:, :, 20:22, 20:22] += 0.2  # 4 healthy lung pixels per image
    twin[:, :, 0:2, 0:2] += 0.4  # 4 pixels outside the lungs per image
    scores = false_change(twin, true_twin, lesion, lung)
    healthy = ~lesion
    assert scores["false_change_in_lung"] == pytest.approx(4 * 4 * 0.2 / float((healthy & lung).sum()), rel=1e-4)
    assert scores["false_change"] == pytest.approx(4 * 4 * (0.2 + 0.4) / float(healthy.sum()), rel=1e-4)


def test_identity_change_is_the_mean_change_of_normal_images():
    normal = torch.full((2, 1, 8, 8), 0.5)
    twin = normal.clone()
    twin[0, :, :4, :4] += 0.4
    assert identity_change(normal, twin) == pytest.approx(0.4 * 16 / 128)


def test_pixel_classes_map_labels_through_each_images_lesion_classes():
    labels = torch.tensor([[[0, 1], [2, 2]], [[1, 0], [0, 0]]])
    lesion_class = torch.tensor([[3, 0], [2, -1]])
    assert pixel_classes(labels, lesion_class).tolist() == [[[-1, 3], [0, 0]], [[2, -1], [-1, -1]]]


def mixed_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image 0: an opacity (score 0.5) and a pneumothorax (score 1.0) on background 0. Image 1: a nodule
    alone, on background 0.7. Counting the pneumothorax as an opacity negative, or image 1 in the opacity
    evaluation, would put negatives above the opacity."""
    labels = torch.zeros(2, SIZE, SIZE, dtype=torch.long)
    labels[0, 6:10, 5:9] = 1
    labels[0, 6:14, 20:26] = 2
    labels[1, 10:14, 5:9] = 1
    lesion_class = torch.tensor([[0, 3], [1, -1]])
    score = torch.zeros(2, 1, SIZE, SIZE)
    score[0, 0][labels[0] == 1] = 0.5
    score[0, 0][labels[0] == 2] = 1.0
    score[1] = 0.7
    score[1, 0][labels[1] == 1] = 0.9
    return score, labels, lesion_class, lungs(2)


def test_per_class_leaves_other_classes_and_images_out():
    score, labels, lesion_class, lung = mixed_case()
    by_class = per_class(score, labels, lesion_class, lung, CLASSES)
    opacity = by_class["opacity"]
    assert opacity["images"] == 1
    assert opacity["auroc_in_lung"] == pytest.approx(1.0) and opacity["auprc_in_lung"] == pytest.approx(1.0)
    assert opacity["lesion_share"] == pytest.approx(16 / (SIZE * SIZE - 48))
    pooled = localisation(score, labels == 1, lung)  # all "lesion 1" pixels, other pixels as negatives
    assert pooled["auprc_in_lung"] < 0.9
    assert by_class["pneumothorax"]["auprc"] == pytest.approx(1.0)
    assert by_class["nodule"]["auroc"] == pytest.approx(1.0)
    assert by_class["effusion"]["images"] == 0 and math.isnan(by_class["effusion"]["auroc_in_lung"])


def test_per_class_recall_counts_only_that_class():
    score, labels, lesion_class, lung = mixed_case()
    true_twin = torch.full((2, 1, SIZE, SIZE), 0.4)
    image = true_twin + 0.2 * (labels > 0)[:, None]
    twin = image.clone()
    twin[0, 0][labels[0] == 1] = 0.4  # the opacity removed, the pneumothorax left
    by_class = per_class(score, labels, lesion_class, lung, CLASSES, image=image, twin=twin, true_twin=true_twin)
    assert by_class["opacity"]["lesion_recall"] == pytest.approx(1.0)
    assert by_class["pneumothorax"]["lesion_recall"] == pytest.approx(0.0)
    assert math.isnan(by_class["effusion"]["lesion_recall"])


def test_score_map_and_score_twin_keys():
    case = phantoms()
    score = (case["image"] - case["true_twin"]).abs()
    localisation_keys = {
        "auroc",
        "auprc",
        "lesion_share",
        "auroc_in_lung",
        "auprc_in_lung",
        "lesion_share_in_lung",
        "lesion_inside_lung",
    }
    per_class_keys = {f"{key}/{name}" for key in localisation_keys | {"images"} for name in CLASSES}
    assert (
        set(score_map(score, case["lesion_labels"], case["lesion_class"], case["lung_mask"], CLASSES))
        == localisation_keys | per_class_keys
    )
    twin_keys = set(
        score_twin(
            case["image"],
            case["true_twin"],
            case["true_twin"],
            case["lesion_labels"],
            case["lesion_class"],
            case["lung_mask"],
            case["normal_image"],
            case["normal_image"],
            CLASSES,
        )
    )
    extra = {
        "ssim",
        "ssim_outside_lesion",
        "psnr",
        "psnr_outside_lesion",
        "lesion_recall",
        "false_change",
        "false_change_in_lung",
    }
    assert twin_keys == localisation_keys | per_class_keys | extra | {"identity_change"} | {
        f"lesion_recall/{name}" for name in CLASSES
    }

import pytest
import torch
from torchvision.transforms.functional import gaussian_blur as torchvision_blur

from twinray.shared.evaluation.no_learning import (
    HIGHPASS_GRID,
    choose_on_val,
    erode,
    gaussian_blur,
    lung_highpass,
    lung_intensity,
)
from twinray.shared.evaluation.residual_metrics import localisation

SIZE = 32


def full_lungs(n: int = 1) -> torch.Tensor:
    mask = torch.zeros(n, SIZE, SIZE, dtype=torch.bool)
    mask[:, 2:30, 2:30] = True
    return mask


def blob_image(delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A flat 0.4 background with a 3x3 blob of 0.4 + delta in the lung, and the blob's mask."""
    image = torch.full((1, 1, SIZE, SIZE), 0.4)
    image[0, 0, 14:17, 10:13] += delta
    return image, image[:, 0] != 0.4


def test_gaussian_blur_matches_torchvision_and_keeps_a_constant():
    image = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    expected = torchvision_blur(image, kernel_size=[13, 13], sigma=[2.0, 2.0])
    assert torch.allclose(gaussian_blur(image, 2.0), expected, atol=1e-5)
    assert torch.allclose(gaussian_blur(torch.full((1, 1, SIZE, SIZE), 0.3), 40.0), torch.tensor(0.3), atol=1e-6)


def test_lung_intensity_is_the_image_inside_the_lungs_only():
    image = torch.rand(1, 1, SIZE, SIZE)
    lungs = full_lungs()
    score = lung_intensity(image, lungs)
    assert torch.equal(score[lungs[:, None]], image[lungs[:, None]])
    assert (score[~lungs[:, None]] == 0).all()


@pytest.mark.parametrize("signed", [True, False])
def test_highpass_is_zero_on_a_constant_image(signed: bool):
    score = lung_highpass(4.0, 2, signed)(torch.full((2, 1, SIZE, SIZE), 0.6), full_lungs(2))
    assert score.abs().max() < 1e-6


@pytest.mark.parametrize("signed", [True, False])
def test_highpass_finds_a_small_bright_blob(signed: bool):
    image, blob = blob_image(0.3)
    score = lung_highpass(3.0, 0, signed)(image, full_lungs())
    assert localisation(score, blob, full_lungs())["auroc_in_lung"] > 0.99
    assert blob.flatten()[score.flatten().argmax()]


def test_only_the_absolute_highpass_finds_density_loss():
    image, blob = blob_image(-0.3)
    lungs = full_lungs()
    positive, absolute = lung_highpass(3.0, 0, True)(image, lungs), lung_highpass(3.0, 0, False)(image, lungs)
    assert (positive[blob[:, None]] == 0).all()
    assert localisation(absolute, blob, lungs)["auroc_in_lung"] > 0.9 > localisation(positive, blob, lungs)["auroc_in_lung"]


def test_erosion_shrinks_the_lungs_and_blanks_the_lung_edge():
    lungs = full_lungs()
    assert torch.equal(erode(lungs, 3), torch.nn.functional.pad(torch.ones(1, 22, 22, dtype=torch.bool), (5, 5, 5, 5)))
    image = torch.rand(1, 1, SIZE, SIZE)
    score = lung_highpass(2.0, 3, False)(image, lungs)
    assert (score[0, 0, 2:5, :] == 0).all() and (score[0, 0, 5:27, 5:27] > 0).any()


def test_sizes_scale_with_the_image_height():
    image = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    lungs = torch.zeros(1, 64, 64, dtype=torch.bool)
    lungs[:, 8:56, 8:56] = True
    scaled = lung_highpass(8.0, 3, True, reference_height=256)(image, lungs)
    assert torch.equal(scaled, lung_highpass(2.0, 1, True)(image, lungs))


def test_the_grid_covers_every_setting():
    assert len(HIGHPASS_GRID) == 4 * 3 * 2
    assert {"highpass_s4_e0_pos", "highpass_s24_e6_abs"} <= set(HIGHPASS_GRID)


def test_choose_on_val_picks_the_highpass_where_brightness_varies_more_than_the_lesions():
    image = torch.linspace(0.1, 0.8, SIZE).view(1, 1, 1, SIZE).repeat(2, 1, SIZE, 1)  # brighter to the right
    lesion = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    lesion[:, 10:13, 6:9] = True  # in the dark half, dimmer than the bright healthy half
    image[lesion[:, None]] += 0.15
    lungs = full_lungs(2)
    candidates = {"lung_intensity": lung_intensity, "highpass": lung_highpass(2.0, 0, True)}
    best, scores = choose_on_val(candidates, image, lesion, lungs)
    assert best == "highpass"
    assert scores["highpass"]["auprc_in_lung"] > scores["lung_intensity"]["auprc_in_lung"]
    assert set(scores) == set(candidates)


def test_choose_on_val_needs_lesions_to_rank():
    with pytest.raises(ValueError, match="finite"):
        choose_on_val({"lung_intensity": lung_intensity}, torch.rand(1, 1, SIZE, SIZE), torch.zeros(1, SIZE, SIZE), full_lungs())

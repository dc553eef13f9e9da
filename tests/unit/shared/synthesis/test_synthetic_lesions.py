"""Generic lesions: drawn only where the lungs are, of both signs, reproducible from the generator's seed."""

import pytest
import torch
import torch.nn.functional as F

from twinray.shared.synthesis.synthetic_lesions import LesionDraw, draw_lesions


def _healthy(n: int = 6, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Textured mid-grey images and one rectangular 'lung' each."""
    images = (0.4 + 0.1 * torch.rand((n, 1, size, size), generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    lungs = torch.zeros((n, size, size), dtype=torch.bool)
    lungs[:, 20:44, 10:30] = True
    return images, lungs


def test_lesions_stay_near_the_lungs_and_in_range() -> None:
    images, lungs = _healthy()
    abnormal = draw_lesions(images, lungs, torch.Generator().manual_seed(1))
    assert abnormal.shape == images.shape and abnormal.min() >= 0 and abnormal.max() <= 1
    changed = (abnormal - images).abs()[:, 0] > 0
    assert changed.any(dim=(1, 2)).all(), "every image gets a lesion"
    # the lesions fade out within the blur of the lung mask (sigma 2% of the side, three sigma wide)
    near = F.max_pool2d(lungs[:, None].float(), kernel_size=2 * 5 + 1, stride=1, padding=5)[:, 0] > 0
    assert not changed[~near].any()


def test_lesions_add_and_remove_density() -> None:
    images, lungs = _healthy(n=24)
    change = draw_lesions(images, lungs, torch.Generator().manual_seed(2), LesionDraw(max_lesions=1)) - images
    signs = {int(torch.sign(c.sum())) for c in change}
    assert signs == {-1, 1}


def test_density_loss_can_be_left_out_and_lungless_images_stay_healthy() -> None:
    images, lungs = _healthy(n=12)
    lungs[0] = False
    change = draw_lesions(images, lungs, torch.Generator().manual_seed(5), LesionDraw(loss_share=0.0)) - images
    assert (change >= 0).all(), "without density loss every lesion only adds density"
    assert not change[0].any()


@pytest.mark.parametrize("bad", [{"max_lesions": 0}, {"radius": (0.2, 0.1)}, {"contrast": (0.0, 0.1)}, {"loss_share": 1.5}])
def test_impossible_draws_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        LesionDraw(**bad)


def test_a_seeded_draw_repeats() -> None:
    images, lungs = _healthy(n=3)
    first = draw_lesions(images, lungs, torch.Generator().manual_seed(3))
    assert torch.equal(first, draw_lesions(images, lungs, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, draw_lesions(images, lungs, torch.Generator().manual_seed(4)))


def test_mismatched_lungs_are_refused() -> None:
    images, lungs = _healthy(n=2)
    with pytest.raises(ValueError, match="lungs"):
        draw_lesions(images, lungs[:1], torch.Generator())

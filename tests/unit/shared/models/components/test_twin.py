"""full_resolution_twin: only the generator's change is upsampled; everything else stays bit-exact."""

from __future__ import annotations

import torch

from twinray.shared.models.components.twin import full_resolution_twin, to_input_size


def test_identity_generator_returns_the_input_exactly():
    image = torch.rand(2, 1, 64, 64)
    assert torch.equal(full_resolution_twin(lambda low: low, image, 16), image)


def test_pixels_outside_the_changed_region_are_kept_exactly():
    image = torch.rand(1, 1, 64, 64)

    def darken_block(low: torch.Tensor) -> torch.Tensor:  # changes low-res rows/cols 4..7 of 16
        out = low.clone()
        out[..., 4:8, 4:8] -= 0.2
        return out

    twin = full_resolution_twin(darken_block, image, 16)
    changed = twin != image
    assert changed[..., 18:30, 18:30].all()  # inside the block's footprint (4x upsampling)
    # bilinear upsampling spreads the change by at most one low-res pixel (4 px) around the block
    outside = torch.ones_like(changed)
    outside[..., 12:36, 12:36] = False
    assert not changed[outside].any()


def test_twin_stays_in_unit_range_and_matches_generator_at_its_own_size():
    image = torch.rand(2, 1, 32, 32)
    twin = full_resolution_twin(lambda low: low + 0.7, image, 32)
    torch.testing.assert_close(twin, (image + 0.7).clamp(0, 1))
    assert to_input_size(image, 32) is image
    assert to_input_size(image, 8).shape == (2, 1, 8, 8)

"""The generator's training pairs (pseudo-pairs, generic lesions, both) and its label-free checkpoint choice."""

from __future__ import annotations

import pytest
import torch

from twinray.shared.models.components.gan_losses import change_balanced_error
from twinray.shared.models.normal_synthesis.network import AnatomyConditionedGenerator, SpadeConfig
from twinray.shared.synthesis.synthetic_lesions import LesionDraw
from twinray.training.normal_synthesis import (
    HOLDOUT_EVERY,
    PAIR_SOURCES,
    _held_out,
    label_free_selection,
    lesion_draw,
    pair_rows,
    with_lesions,
)

SIZE = 16


def _data(abnormal: int, normal: int) -> dict[str, torch.Tensor]:
    return {
        "abnormal": torch.rand(abnormal, 1, 2 * SIZE, 2 * SIZE),
        "pseudo_normal_low": torch.rand(abnormal, 1, SIZE, SIZE),
        "anatomy": torch.randint(0, 8, (abnormal, 2 * SIZE, 2 * SIZE)),
        "anatomy_low": torch.randint(0, 8, (abnormal, SIZE, SIZE)),
        "normal": torch.rand(normal, 1, 2 * SIZE, 2 * SIZE),
        "normal_low": torch.rand(normal, 1, SIZE, SIZE),
        "normal_anatomy": torch.randint(0, 8, (normal, 2 * SIZE, 2 * SIZE)),
        "normal_anatomy_low": torch.randint(0, 8, (normal, SIZE, SIZE)),
        "normal_lungs": torch.ones(normal, 2 * SIZE, 2 * SIZE, dtype=torch.bool),
    }


def test_every_tenth_pair_and_normal_is_held_out_and_nothing_is_lost():
    data = _data(25, 31)
    train, held = _held_out(data)
    assert len(held["abnormal"]) == 25 // HOLDOUT_EVERY and len(held["normal_low"]) == 31 // HOLDOUT_EVERY
    for key, tensor in data.items():
        assert len(train[key]) + len(held[key]) == len(tensor)
    torch.testing.assert_close(held["pseudo_normal_low"][0], data["pseudo_normal_low"][HOLDOUT_EVERY - 1])


@pytest.mark.parametrize("pairs", PAIR_SOURCES)
def test_pair_rows_hold_the_chosen_sources(pairs):
    data = _data(5, 7)
    rows = pair_rows(data, pairs)
    expected = {"pseudo": 5, "synthetic": 7, "both": 12}[pairs]
    assert {len(tensor) for tensor in rows.values()} == {expected}
    assert int(rows["draw"].sum()) == (0 if pairs == "pseudo" else 7)
    drawn = with_lesions(rows, torch.Generator().manual_seed(0), LesionDraw())
    changed = (drawn != rows["source"]).flatten(1).any(dim=1)
    assert torch.equal(changed, rows["draw"]), "lesions go into the healthy sources and nowhere else"
    with pytest.raises(ValueError, match="pairs must be one of"):
        pair_rows(data, "cyclegan")


def test_an_untrained_generator_is_scored_by_its_distance_to_the_pairs_normals():
    generator = AnatomyConditionedGenerator(SpadeConfig(input_size=SIZE, channels=(4, 8), hidden=4)).eval()
    _, held_normal = _held_out(_data(20, 20))
    held = pair_rows(held_normal, "pseudo")
    scores = label_free_selection(generator, held, held_normal, torch.device("cpu"))
    low = torch.nn.functional.interpolate(held["source"], size=(SIZE, SIZE), mode="bilinear", antialias=True).clamp(0, 1)
    assert scores["held_out_pair_error"] == pytest.approx(float(change_balanced_error(low, held["target_low"], low)), rel=1e-2)
    assert scores["healthy_change"] == pytest.approx(0.0, abs=1e-6)  # zero-initialised head: the identity
    assert scores["selection"] == pytest.approx(-(scores["held_out_pair_error"] + scores["healthy_change"]))


def test_the_ablation_reads_no_anatomy():
    config = SpadeConfig(input_size=SIZE, channels=(4, 8), hidden=4, negative_residual=False, use_anatomy=False)
    generator = AnatomyConditionedGenerator(config)
    torch.nn.init.normal_(generator.head.conv.weight)
    image = torch.rand(1, 1, SIZE, SIZE)
    one, other = (generator.residual(image, torch.full((1, SIZE, SIZE), label)) for label in (1, 6))
    torch.testing.assert_close(one, other)


def test_a_one_signed_generator_is_given_no_lesion_it_cannot_undo():
    assert lesion_draw(SpadeConfig(negative_residual=True)).loss_share == 0.0
    assert lesion_draw(SpadeConfig(negative_residual=False)).loss_share > 0.0

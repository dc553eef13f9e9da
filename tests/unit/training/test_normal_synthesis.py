"""The generator's label-free checkpoint choice: held-out pseudo-pairs, scored without lesion masks."""

from __future__ import annotations

import pytest
import torch

from twinray.shared.models.normal_synthesis.network import AnatomyConditionedGenerator, SpadeConfig
from twinray.training.normal_synthesis import HOLDOUT_EVERY, _held_out, label_free_selection

SIZE = 16


def _data(abnormal: int, normal: int) -> dict[str, torch.Tensor]:
    return {
        "abnormal": torch.rand(abnormal, 1, 2 * SIZE, 2 * SIZE),
        "pseudo_normal_low": torch.rand(abnormal, 1, SIZE, SIZE),
        "anatomy": torch.randint(0, 8, (abnormal, 2 * SIZE, 2 * SIZE)),
        "anatomy_low": torch.randint(0, 8, (abnormal, SIZE, SIZE)),
        "normal_low": torch.rand(normal, 1, SIZE, SIZE),
        "normal_anatomy_low": torch.randint(0, 8, (normal, SIZE, SIZE)),
    }


def test_every_tenth_pair_and_normal_is_held_out_and_nothing_is_lost():
    data = _data(25, 31)
    train, held = _held_out(data)
    assert len(held["abnormal"]) == 25 // HOLDOUT_EVERY and len(held["normal_low"]) == 31 // HOLDOUT_EVERY
    for key, tensor in data.items():
        assert len(train[key]) + len(held[key]) == len(tensor)
    torch.testing.assert_close(held["pseudo_normal_low"][0], data["pseudo_normal_low"][HOLDOUT_EVERY - 1])


def test_an_untrained_generator_is_scored_by_its_distance_to_the_pseudo_normals():
    generator = AnatomyConditionedGenerator(SpadeConfig(input_size=SIZE, channels=(4, 8), hidden=4)).eval()
    _, held = _held_out(_data(20, 20))
    scores = label_free_selection(generator, held, torch.device("cpu"))
    low = torch.nn.functional.interpolate(held["abnormal"], size=(SIZE, SIZE), mode="bilinear", antialias=True).clamp(0, 1)
    assert scores["pseudo_normal_l1"] == pytest.approx(float((low - held["pseudo_normal_low"]).abs().mean()), abs=1e-3)
    assert scores["healthy_change"] == pytest.approx(0.0, abs=1e-3)  # zero-initialised head: the identity
    assert scores["selection"] == pytest.approx(-(scores["pseudo_normal_l1"] + scores["healthy_change"]))


def test_the_ablation_reads_no_anatomy():
    config = SpadeConfig(input_size=SIZE, channels=(4, 8), hidden=4, negative_residual=False, use_anatomy=False)
    generator = AnatomyConditionedGenerator(config)
    torch.nn.init.normal_(generator.head.conv.weight)
    image = torch.rand(1, 1, SIZE, SIZE)
    one, other = (generator.residual(image, torch.full((1, SIZE, SIZE), label)) for label in (1, 6))
    torch.testing.assert_close(one, other)

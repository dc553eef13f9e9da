"""cxr-phantom/2 against the real annotation tables it is calibrated on: each rendered statistic's
median within a stated tolerance of the real one, and the real spread reproduced where we claim it,
on phantoms the scales were not fitted on. The tolerances hold the bias plus the sampling spread of
200 phantoms (medians move by up to about 0.03 from one sample of persons to the next)."""

from __future__ import annotations

import numpy as np
import pytest

from twinray.shared.data.phantoms.calibration import FIT, Quantiles
from twinray.shared.data.phantoms.calibration_check import phantom_statistics, real_counterparts, sample
from twinray.shared.data.real_statistics import stored_real_statistics

# (table, statistic): the largest |phantom median - real median| we accept, in fractions of the image.
TOLERANCES = {
    ("rsna_labels", "box_width"): 0.03,
    ("rsna_labels", "box_height"): 0.04,
    ("rsna_labels", "box_centre_x_mirrored"): 0.03,
    ("rsna_labels", "box_centre_y"): 0.03,
    ("nih_nodule_and_mass", "width"): 0.02,
    ("nih_nodule_and_mass", "centre_y"): 0.05,
    ("nih_effusion", "height"): 0.05,
    ("siim_pneumothorax", "mask_area"): 0.005,
    ("siim_pneumothorax", "bbox_width"): 0.06,  # known: a little wide (about 0.27 against 0.22)
    ("siim_pneumothorax", "bbox_height"): 0.04,
    ("siim_pneumothorax", "centroid_y"): 0.04,
    ("v7labs_lungs", "bbox_y0"): 0.03,
    ("v7labs_lungs", "bbox_y1"): 0.03,
    ("v7labs_lungs", "bbox_x0"): 0.03,
    ("v7labs_lungs", "bbox_x1"): 0.03,
    # Known gap: the phantom's lungs are narrower eggs than real lung masks, so at the real extent
    # they cover less of the film (area about 0.25 against 0.36).
    ("v7labs_lungs", "area"): 0.13,
}


@pytest.fixture(scope="module")
def measured() -> dict:
    return phantom_statistics(sample(200, size=128, seed=1))  # the scales were fitted on seed 0


@pytest.mark.parametrize(("table", "statistic"), list(TOLERANCES))
def test_rendered_medians_match_the_real_tables(measured: dict, table: str, statistic: str) -> None:
    real, ours = real_counterparts()[table][statistic]["q50"], measured[table][statistic]["q50"]
    assert abs(ours - real) <= TOLERANCES[table, statistic], f"{table} {statistic}: phantom {ours:.3f}, real {real:.3f}"


@pytest.mark.parametrize(("table", "statistic"), [("rsna_labels", "box_height"), ("siim_pneumothorax", "bbox_height")])
def test_the_real_spread_is_kept_where_it_is_wide(measured: dict, table: str, statistic: str) -> None:
    real, ours = real_counterparts()[table][statistic], measured[table][statistic]
    assert 0.6 <= (ours["q75"] - ours["q25"]) / (real["q75"] - real["q25"]) <= 1.5


def test_counts_and_views_are_the_real_shares() -> None:
    real = stored_real_statistics()
    per_image = real["rsna_labels"]["boxes_per_positive_image"]
    assert sum(FIT.opacities_per_image) == pytest.approx(1.0)
    assert FIT.opacities_per_image[1] == pytest.approx(per_image["2"] / sum(per_image.values()))
    assert (FIT.ap_share_abnormal, FIT.ap_share_normal) == (
        real["rsna_headers"]["ap_share_positive"],
        real["rsna_headers"]["ap_share_negative"],
    )


def test_quantile_draws_follow_their_quantiles() -> None:
    quantiles = Quantiles((0.1, 0.2, 0.3, 0.5, 0.9), scale=2.0, high=5.0)
    draws = np.array([quantiles.draw(np.random.default_rng(seed)) for seed in range(4000)])
    np.testing.assert_allclose(np.quantile(draws, (0.05, 0.25, 0.5, 0.75, 0.95)), (0.2, 0.4, 0.6, 1.0, 1.8), atol=0.05)

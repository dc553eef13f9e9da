"""The real annotation tables of torchxrayvision==1.5.7: known totals, the SIIM RLE decoding, and the committed JSON."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twinray.shared.data import real_tables
from twinray.shared.data.real_statistics import stored_real_statistics
from twinray.shared.data.real_tables import (
    SIDE,
    decode_siim_runs,
    merge_runs,
    round_significant,
    runs_geometry,
    siim_mask,
)

NIH_FINDINGS = {"Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumonia", "Pneumothorax"}


@pytest.fixture(scope="module")
def statistics() -> dict:
    return real_tables.real_statistics()


@pytest.fixture(scope="module")
def siim() -> pd.DataFrame:
    return real_tables.read_siim()


def test_known_totals(statistics: dict) -> None:
    labels, headers = statistics["rsna_labels"], statistics["rsna_headers"]
    assert (labels["rows"], labels["images"], labels["positive_images"], labels["boxes"]) == (30_227, 26_684, 6_012, 9_555)
    assert headers["view_position_counts"] == {"AP": 12_173, "PA": 14_511}
    assert headers["joined_images"] == 26_684  # every header row has a label row
    assert statistics["nih_boxes"]["boxes"] == 984
    assert set(statistics["nih_boxes"]["findings"]) == NIH_FINDINGS
    assert sum(f["count"] for f in statistics["nih_boxes"]["findings"].values()) == 984
    siim = statistics["siim_pneumothorax"]
    assert (siim["rows"], siim["images"], siim["positive_images"]) == (12_954, 12_047, 2_669)
    v7 = statistics["v7labs_lungs"]
    assert (v7["masks"], v7["empty_masks"]) == (517, 82)


def test_recomputed_statistics_equal_the_committed_json(statistics: dict) -> None:
    assert round_significant(statistics) == stored_real_statistics()


def test_sanity_ranges(statistics: dict) -> None:
    labels, headers = statistics["rsna_labels"], statistics["rsna_headers"]
    assert 0.2 < labels["positive_image_share"] < 0.25
    assert sum(labels["boxes_per_positive_image"].values()) == pytest.approx(1.0)
    assert 0.1 < labels["box_width"]["q50"] < 0.4 and 0.1 < labels["box_height"]["q50"] < 0.5
    assert 0.2 < labels["box_centre_x"]["q05"] and labels["box_centre_x"]["q95"] < 0.8  # inside the lungs, not the edges
    assert headers["ap_share_positive"] > headers["ap_share"] > headers["ap_share_negative"]  # pneumonia films are mostly AP
    assert 30 < headers["age_years"]["q50"] < 70 and headers["age_years"]["q95"] <= real_tables.MAX_PLAUSIBLE_AGE
    siim = statistics["siim_pneumothorax"]
    assert 0.15 < siim["positive_image_share"] < 0.3
    assert siim["mask_area"]["q50"] < 0.05
    assert siim["centroid_upper_half_share"] > 0.7  # pneumothorax collects apically
    assert siim["centroid_lateral_distance"]["q50"] > 0.1  # ... and laterally, against the chest wall
    nih = statistics["nih_boxes"]["findings"]
    assert nih["Cardiomegaly"]["centre_x"]["q50"] > 0.5  # the heart bulges to the patient's left = image right
    assert nih["Nodule"]["width"]["q95"] < nih["Cardiomegaly"]["width"]["q05"]
    assert nih["Pneumothorax"]["centre_y"]["q50"] < nih["Effusion"]["centre_y"]["q50"]  # air rises, fluid sinks
    v7 = statistics["v7labs_lungs"]
    assert 0.2 < v7["area"]["q50"] < 0.6
    assert v7["bbox_x0"]["q50"] < 0.5 < v7["bbox_x1"]["q50"] and v7["bbox_y0"]["q50"] < 0.5 < v7["bbox_y1"]["q50"]
    assert 0.4 < v7["split_x"]["q50"] < 0.6 and 0.5 < v7["left_right_area_ratio"]["q50"] < 2


def test_siim_relative_rle_is_column_major() -> None:
    # 4x4 image: gap 1, run 2 -> flat 1..2 = column x=0, rows y=1..2; gap 3 after flat 3 -> flat 6 = (x=1, y=2).
    starts, lengths = decode_siim_runs("1 2 3 1", side=4)
    assert starts.tolist() == [1, 6] and lengths.tolist() == [2, 1]
    mask = siim_mask(["1 2 3 1"], side=4)
    assert np.argwhere(mask).tolist() == [[1, 0], [2, 0], [2, 1]]  # (y, x)
    geometry = runs_geometry(starts, lengths, side=4)  # pixel centres: x = 0.5, 0.5, 1.5; y = 1.5, 2.5, 2.5
    expected = {"area": 3 / 16, "x0": 0.0, "x1": 0.5, "y0": 0.25, "y1": 0.75, "cx": 2.5 / 3 / 4, "cy": 6.5 / 3 / 4}
    assert geometry == pytest.approx(expected)


def test_siim_runs_crossing_a_column_are_split_and_bad_rle_is_refused() -> None:
    starts, lengths = decode_siim_runs("2 4", side=4)  # flat 2..5 crosses from column 0 into column 1
    assert starts.tolist() == [2, 4] and lengths.tolist() == [2, 2]
    for bad in ("1 2 3", "-1 2", "10 7"):
        with pytest.raises(ValueError):
            decode_siim_runs(bad, side=4)


def test_merge_runs_makes_the_union() -> None:
    starts, lengths = merge_runs(np.array([10, 0, 12, 30, 31]), np.array([5, 3, 10, 1, 2]))
    assert starts.tolist() == [0, 10, 30, 31] and lengths.tolist() == [3, 12, 1, 2]  # touching runs stay apart (columns)
    starts, lengths = merge_runs(*decode_siim_runs("2 2 0 3", side=4))  # (2, 2) ends a column, (4, 3) starts the next
    assert starts.tolist() == [2, 4] and lengths.tolist() == [2, 3]


def test_siim_masks_from_runs_match_materialised_masks(siim: pd.DataFrame) -> None:
    positive = siim[siim["rle"] != "-1"]
    for rle in positive["rle"]:  # every component of the set: inside the image, one column per run
        starts, lengths = decode_siim_runs(rle)
        assert starts.min() >= 0 and (starts + lengths).max() <= SIDE * SIDE and (lengths > 0).all()
        assert ((starts // SIDE) == ((starts + lengths - 1) // SIDE)).all()
    geometry = real_tables.siim_image_geometry(siim)
    overlapping = geometry.index[geometry["component_area_sum"] > geometry["area"]]
    sample = list(geometry.index[:20]) + list(overlapping[:10])
    assert len(overlapping) >= 10
    for image_id in sample:
        rles = positive.loc[positive["ImageId"] == image_id, "rle"].tolist()
        for rle in rles:
            assert siim_mask([rle]).sum() == decode_siim_runs(rle)[1].sum()
        mask = siim_mask(rles)
        ys, xs = np.nonzero(mask)
        row = geometry.loc[image_id]
        assert row["area"] == pytest.approx(mask.sum() / SIDE**2)  # the union, not the sum, of overlapping components
        assert (row["x0"], row["x1"], row["y0"], row["y1"]) == (
            xs.min() / SIDE,
            (xs.max() + 1) / SIDE,
            ys.min() / SIDE,
            (ys.max() + 1) / SIDE,
        )
        assert (row["cx"], row["cy"]) == pytest.approx(((xs.mean() + 0.5) / SIDE, (ys.mean() + 0.5) / SIDE))


def test_lung_mask_geometry_splits_at_the_gap() -> None:
    mask = np.zeros((10, 20), dtype=np.uint8)
    mask[2:8, 2:8] = 255  # image-left lung: 36 px
    mask[1:9, 11:17] = 255  # image-right lung: 48 px
    mask[0, 0] = 127  # a burned-in marker is not lung
    geometry = real_tables.lung_mask_geometry(mask)
    assert geometry is not None
    assert geometry["area"] == 84 / 200 and geometry["left_right_ratio"] == 36 / 48
    assert (geometry["x0"], geometry["x1"], geometry["y0"], geometry["y1"]) == (0.1, 0.85, 0.1, 0.9)
    assert geometry["height_width_ratio"] == 8 / 15 and geometry["split_column_share"] == 0
    assert real_tables.lung_mask_geometry(np.zeros((4, 4), dtype=np.uint8)) is None


def test_round_significant_keeps_counts_exact() -> None:
    assert round_significant({"n": 30_227, "share": 0.225303552, "small": 0.0013001, "x": [1234.56, 0.0]}) == {
        "n": 30_227,
        "share": 0.2253,
        "small": 0.0013,
        "x": [1235.0, 0.0],
    }


def test_missing_data_file_names_the_install_command() -> None:
    with pytest.raises(RuntimeError, match=r"pip install torchxrayvision==1\.5\.7"):
        real_tables.data_file("no-such-table.csv")

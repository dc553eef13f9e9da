"""The demo's defect galleries come from real DefectGeneration calls over Ray Serve gRPC."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from twinray.services.cli.demo_defects import GALLERY_CASES, defect_galleries
from twinray.shared.platform.storage import open_store


@pytest.mark.integration
def test_defect_galleries_draw_each_method_over_grpc(
    serve_channel, trained_mask_ddpm, trained_normal_manifold, product_dataset, twinray_settings, tmp_path, capsys
):
    store = open_store(twinray_settings)
    figures = defect_galleries(serve_channel, store, tmp_path, dataset=product_dataset)
    assert [path.name for path in figures] == ["defects_mask_blend.png", "defects_conditioned_ddpm.png"]
    for path in figures:
        with Image.open(path) as image:
            assert image.size[1] > 100 * GALLERY_CASES and np.asarray(image).std() > 0
        assert store.get_bytes(f"reports/demo/{path.name}") == path.read_bytes()
    printed = capsys.readouterr().out
    assert printed.count("outside the mask unchanged: True") == 2 * GALLERY_CASES
    assert "mask_blend served by defect-masks v" in printed and "conditioned_ddpm served by" in printed
    assert "normal-manifold v" in printed

"""The factory half of `make demo`: product surfaces with a few real defects -> the two defect
generators trained on Ray (`mask_blend`: mask DDPM + blending, approach A of the original work;
`conditioned_ddpm`: normal-manifold DDPM + conditioning encoder, approach B) -> DefectGeneration over
gRPC -> one gallery per method beside real defects.

Models are trained on the first REAL_DEFECTS real defects only, the scarce case the science is for.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
from tqdm import tqdm

from twinray.services.cli.defaults import PRODUCT_SPLITS, PRODUCTS
from twinray.services.cli.figures import defect_gallery
from twinray.services.defect_generation.client import synthesize_defect
from twinray.shared.data.products.dataset import read_product_split, write_product_dataset
from twinray.shared.platform.config import Settings
from twinray.shared.platform.imaging import decode_png, encode_float01_png16
from twinray.shared.platform.imaging.unit_range import to_unit
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage import ArtifactStore
from twinray.training import ddpm, defect_encoder
from twinray.v1 import common_pb2
from twinray.v1 import defect_generation_pb2 as pb

REAL_DEFECTS = 5
GALLERY_CASES = 4
METHODS = {"mask_blend": pb.DEFECT_METHOD_MASK_BLEND, "conditioned_ddpm": pb.DEFECT_METHOD_CONDITIONED_DDPM}
TITLES = {
    "mask_blend": "mask_blend: mask DDPM + real appearance blended",
    "conditioned_ddpm": "conditioned_ddpm: normal-manifold DDPM steered by the defect encoder",
}

PublishedOrTrained = Callable[[ModelRegistry, str, str, Callable[[], int]], int]


def train_defect_models(settings: Settings, store: ArtifactStore, published_or_trained: PublishedOrTrained) -> dict[str, int]:
    """The product dataset and the three published defect models (reused when already published)."""
    manifest = write_product_dataset(store, PRODUCTS, category="metal", size=64, splits=PRODUCT_SPLITS, seed=0)
    print(
        f"      dataset {PRODUCTS!r} ({manifest['category']}, {manifest['size']}px): {manifest['splits']['train_defect']['count']}"
        f" real defects, of which the models see the first {REAL_DEFECTS}"
    )
    registry = ModelRegistry(store)
    versions = {}
    for target in ("mask", "image"):
        config = ddpm.ddpm_config(target, dataset=PRODUCTS, real_count=REAL_DEFECTS if target == "mask" else 0)
        name = ddpm.MODEL_NAMES[target]
        versions[name] = published_or_trained(registry, name, PRODUCTS, lambda c=config: ddpm.train_ddpm(settings, c).version)
    encoder_config = defect_encoder.DefectEncoderTrainConfig(
        dataset=PRODUCTS, real_count=REAL_DEFECTS, normal_manifold_version=str(versions[ddpm.MODEL_NAMES["image"]])
    )
    versions[defect_encoder.MODEL_NAME] = published_or_trained(
        registry,
        defect_encoder.MODEL_NAME,
        PRODUCTS,
        lambda: defect_encoder.train_defect_encoder(settings, encoder_config).version,
    )
    return versions


def defect_galleries(channel: grpc.Channel, store: ArtifactStore, out_dir: Path, dataset: str = PRODUCTS) -> list[Path]:
    """DefectGeneration/Synthesize over gRPC with each method on held-out normal parts of `dataset`
    (masks sampled by the server, seeds fixed), and a gallery PNG per method beside held-out real defects."""
    normals = read_product_split(store, dataset, "test_normal")
    real = read_product_split(store, dataset, "test_defect")
    real_cases = [{"image": image, "mask": mask} for image, mask in zip(to_unit(real.image[:GALLERY_CASES]), real.mask)]
    figures = []
    for method, enum in METHODS.items():
        cases = []
        for i in tqdm(range(GALLERY_CASES), desc=f"gRPC Synthesize ({method})", unit="defect"):
            request = pb.SynthesizeDefectRequest(
                method=enum,
                normal_image=common_pb2.Image(png=encode_float01_png16(to_unit(normals.image[i]))),
                sampling=pb.SamplingOptions(seed=i + 1),
            )
            response = synthesize_defect(channel, request)
            mask = decode_png(response.mask.png).pixels > 0.5
            image, normal = decode_png(response.image_png).pixels, decode_png(response.normal_png).pixels
            cases.append({"normal": normal, "mask": mask, "image": image})
            outside = np.array_equal(image[~mask], normal[~mask])
            print(
                f"      {method} case {i}: {int(mask.sum())} defect pixels, mean change inside "
                f"{np.abs(image - normal)[mask].mean():.3f}, outside the mask unchanged: {outside}"
            )
        used = ", ".join(f"{m.name} v{m.version}" for m in response.provenance.models)
        print(f"      {method} served by {used}")
        figure = defect_gallery(cases, real_cases, TITLES[method], out_dir / f"defects_{method}.png")
        store.put_file(f"reports/demo/defects_{method}.png", figure, content_type="image/png")
        figures.append(figure)
    return figures

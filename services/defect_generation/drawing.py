"""One synthetic defect from the published generators: request options checked, a normal image and a
mask sampled when not given, the defect drawn by `mask_blend` or `conditioned_ddpm` (twinray.shared.synthesis.defects)."""

from __future__ import annotations

import dataclasses
import secrets

import numpy as np

from twinray.shared.models.components.diffusion import DEFAULT_DDIM_STEPS, DiffusionConfig, sample
from twinray.shared.platform.errors import FailedPrecondition, InvalidInput
from twinray.shared.platform.imaging import ImageLimits, decode_label_png
from twinray.shared.platform.telemetry import model_span
from twinray.shared.synthesis.defects import DefectGenerators, sample_masks, synthesize_conditioned_ddpm, synthesize_mask_blend
from twinray.v1 import common_pb2, defect_generation_pb2

MAX_SIDE = 1024  # largest image or mask side the service draws on (CPU time grows with the area)
MAX_SEED = 2**63 - 1
METHODS = {
    defect_generation_pb2.DEFECT_METHOD_MASK_BLEND: "mask_blend",
    defect_generation_pb2.DEFECT_METHOD_CONDITIONED_DDPM: "conditioned_ddpm",
}


@dataclasses.dataclass(frozen=True)
class Drawn:
    image: np.ndarray  # float32 (S,S) in [0, 1]: `normal` with a defect inside `mask`
    mask: np.ndarray  # bool (S,S), non-empty
    normal: np.ndarray  # float32 (S,S) in [0, 1]


def method_of(method: int) -> str:
    """ "mask_blend" or "conditioned_ddpm" (twinray.shared.synthesis.defects.METHODS) from the request's DefectMethod."""
    if method not in METHODS:
        raise InvalidInput("method is unset: choose DEFECT_METHOD_MASK_BLEND or DEFECT_METHOD_CONDITIONED_DDPM")
    return METHODS[method]


def check_seed(seed: int) -> int:
    """A request's seed, 0 (unset) included."""
    if seed > MAX_SEED:
        raise InvalidInput(f"seed {seed} is too large: use 1..{MAX_SEED}, or 0 for a server-picked seed")
    return seed


def seed_of(sampling: defect_generation_pb2.SamplingOptions) -> int:
    """The request's seed, or a fresh one for 0."""
    return check_seed(sampling.seed) or secrets.randbelow(MAX_SEED) + 1


def ddim_steps(requested: int, config: DiffusionConfig, what: str) -> int:
    """DDIM steps for the DDPM `what`: the request's (1..train timesteps) or, for 0, min(50, timesteps)."""
    if requested > config.train_timesteps:
        raise InvalidInput(f"steps {requested} is out of range: the {what} DDPM takes 1..{config.train_timesteps} (0 = default)")
    return requested or min(DEFAULT_DDIM_STEPS, config.train_timesteps)


def check_side(side: int, what: str) -> int:
    if not ImageLimits.min_side <= side <= MAX_SIDE:
        raise InvalidInput(f"{what} is {side} px; it must be {ImageLimits.min_side}..{MAX_SIDE} px")
    return side


def square_side(pixels: np.ndarray, what: str) -> int:
    """The side of a square image; InvalidInput for any other shape or one over MAX_SIDE."""
    height, width = pixels.shape
    if height != width:
        raise InvalidInput(f"{what} is {width}x{height}; defects are drawn on square images: crop or pad it")
    return check_side(height, what)


def mask_from_message(mask: common_pb2.Mask, side: int, limits: ImageLimits) -> np.ndarray:
    """A caller's mask: an 8-bit PNG of 0 and 255 with at least one 255, `side` x `side`."""
    values = decode_label_png(mask.png, limits)
    height, width = values.shape
    if (mask.height and mask.height != height) or (mask.width and mask.width != width):
        raise InvalidInput(f"mask says {mask.width}x{mask.height} but its PNG is {width}x{height}")
    if (height, width) != (side, side):
        raise InvalidInput(f"mask is {width}x{height} but the normal image is {side}x{side}")
    found = np.unique(values)
    if not set(found.tolist()) <= {0, 255}:
        raise InvalidInput(f"mask must hold only 0 (outside) and 255 (inside); it holds {found[:8].tolist()}")
    if not (values == 255).any():
        raise InvalidInput("mask is empty: mark the defect's pixels with 255")
    return values == 255


def sampled_normal(generators: DefectGenerators, seed: int, steps: int) -> np.ndarray:
    """A normal surface (S,S) float32 from the normal-manifold DDPM."""
    config = generators.normal_config
    with model_span(
        "normal-manifold", generators.versions["normal-manifold"], height=config.image_size, width=config.image_size, batch_size=1
    ):
        return sample(generators.normal_unet, config, 1, steps=steps, sampler="ddim", seed=seed)[0, 0].cpu().numpy()


def sampled_masks(generators: DefectGenerators, count: int, side: int, seed: int, steps: int) -> np.ndarray:
    """`count` non-empty masks (count, side, side) bool from the mask DDPM."""
    with model_span("defect-masks", generators.versions["defect-masks"], height=side, width=side, batch_size=count):
        return sample_masks(generators.mask_unet, generators.mask_config, count, side, seed=seed, sampler="ddim", steps=steps)


def draw(
    generators: DefectGenerators,
    method: str,
    seed: int,
    requested_steps: int,
    *,
    normal: np.ndarray | None,
    mask: np.ndarray | None,
) -> Drawn:
    """One defect by `method` ("mask_blend" or "conditioned_ddpm") with `seed`; an unset normal image or mask is sampled with it.
    Pixels outside the mask are the normal image's, exactly."""
    if method == "mask_blend" and not generators.appearances:
        raise FailedPrecondition(
            "mask_blend has no real defects to blend: the dataset the defect-masks model was trained on is gone from the store"
        )
    # steps are checked against the DDPMs this call runs, before any of them runs
    uses_normal_ddpm = normal is None or method == "conditioned_ddpm"
    normal_steps = ddim_steps(requested_steps, generators.normal_config, "normal-manifold") if uses_normal_ddpm else 0
    mask_steps = ddim_steps(requested_steps, generators.mask_config, "defect-masks") if mask is None else 0
    if normal is None:
        normal = sampled_normal(generators, seed, normal_steps)
    if mask is None:
        mask = sampled_masks(generators, 1, normal.shape[0], seed, mask_steps)[0]
    index = np.zeros(1, np.int64)
    if method == "mask_blend":
        appearance = generators.appearances[seed % len(generators.appearances)]  # the seed also picks the real defect
        drawn = synthesize_mask_blend(normal[None], mask[None], index, [appearance])
    else:
        with model_span(
            "normal-manifold", generators.versions["normal-manifold"], height=len(normal), width=len(normal), batch_size=1
        ):
            drawn = synthesize_conditioned_ddpm(
                generators.normal_unet,
                generators.normal_config,
                generators.encoder,
                normal[None],
                mask[None],
                index,
                seed=seed,
                sampler="ddim",
                steps=normal_steps,
            )
    return Drawn(drawn.image[0], mask, normal.astype(np.float32))

"""The true-twin check every healthy-twin trainer logs each epoch (the matching-pairs translator, the
anatomy-conditioned generator): held-out phantoms, whose true twins and lesion masks are known. Logged
beside the label-free score that chooses the checkpoint, never used to choose; the benchmark that
compares twins is twinray.shared.evaluation.twin_benchmark."""

from __future__ import annotations

import torch
from torch import nn

from twinray.shared.data.anatomy import ANATOMY_CLASSES
from twinray.shared.data.phantoms.dataset import PhantomArrays
from twinray.shared.evaluation.metrics import per_image_class_dice, residual_localisation, summarise_dice, twin_similarity
from twinray.shared.models.components.twin import TwinFunction, batched
from twinray.shared.models.matching_pairs.network import translator_twin
from twinray.shared.models.normal_synthesis.network import AnatomyConditionedGenerator, anatomy_conditioned_twin, segment_anatomy
from twinray.shared.models.segmentation.network import AnatomySegmenter
from twinray.shared.platform.imaging import unit_images


def evaluate_twin_function(
    twin_fn: TwinFunction, arrays: PhantomArrays, *, segmenter: torch.nn.Module | None = None, device: torch.device | None = None
) -> dict[str, float]:
    """Score `twin_fn` ((N,1,H,W) image in [0,1] -> its full-resolution twin) on `arrays`.

    On the ABNORMAL images: SSIM/PSNR to the true twin overall and outside the lesions
    (`twinray.shared.evaluation.metrics.twin_similarity`), `residual_in_lesion` and `residual_auroc`
    (`twinray.shared.evaluation.metrics.residual_localisation`), `l1_to_twin` (mean |twin - true twin|; `l1_input_to_twin`
    is what returning the input scores) and, with a `segmenter`, `anatomy_dice`: mean Dice between
    the segmenter's anatomy map of the twin and of the true twin. On the NORMAL images:
    `identity_change`, the mean |twin - image| (0 for a model that leaves healthy patients alone).
    """
    device = device or torch.device("cpu")
    abnormal = arrays.lesion_seed >= 0
    if not abnormal.any() or abnormal.all():
        raise ValueError("twin evaluation needs both abnormal and normal images")
    image, true_twin = unit_images(arrays.image[abnormal]), unit_images(arrays.twin[abnormal])
    lesion_mask = torch.from_numpy(arrays.lesion_mask[abnormal])
    twin = batched(twin_fn, image, device)
    normal = unit_images(arrays.image[~abnormal])
    scores = {
        **twin_similarity(twin, true_twin, lesion_mask),
        **residual_localisation(image, twin, lesion_mask),
        "l1_to_twin": float((twin - true_twin).abs().mean()),
        "l1_input_to_twin": float((image - true_twin).abs().mean()),
        "identity_change": float((batched(twin_fn, normal, device) - normal).abs().mean()),
    }
    if segmenter is not None:
        labels, truth = (batched(lambda x: segment_anatomy(segmenter, x), images, device) for images in (twin, true_twin))
        dice = per_image_class_dice(labels, truth, len(ANATOMY_CLASSES))
        scores["anatomy_dice"] = summarise_dice(dice, ANATOMY_CLASSES)["mean_dice"]
    return scores


def evaluate_translator(translator: nn.Module, arrays: PhantomArrays, input_size: int) -> dict[str, float]:
    """The abnormal -> normal translator against the phantoms' true twins
    (`twinray.shared.evaluation.twin.evaluate_twin_function`, without the anatomy terms)."""
    device = next(translator.parameters()).device
    return evaluate_twin_function(translator_twin(translator, input_size), arrays, device=device)


def generator_twin(generator: AnatomyConditionedGenerator, segmenter: AnatomySegmenter) -> TwinFunction:
    """The generator as a twin function that segments its input itself (what the service does)."""
    return lambda image: anatomy_conditioned_twin(generator.eval(), segmenter, image)

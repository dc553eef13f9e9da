"""`twinray eval normal-synthesis`: the published twin generator, the matching-pairs translator whose
pseudo-pairs it trained on (with generic lesions, by default), and the no-learning rows, on the healthy-twin benchmark
(twinray.shared.evaluation.twin_benchmark), in the shared report shape (twinray.shared.evaluation.report).
Over several trained seeds: `twinray.training.twin_benchmark`."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import torch

from twinray.shared.data.phantoms.dataset import PhantomArrays, read_phantom_split
from twinray.shared.data.phantoms.pathologies import PATHOLOGIES
from twinray.shared.evaluation.report import evaluation_report, published_protocol
from twinray.shared.evaluation.twin import generator_twin
from twinray.shared.evaluation.twin_benchmark import HIGHPASS_SELECTION, HeldOut, benchmark_rows, no_learning_rows, twin_rows
from twinray.shared.models.components.twin import TwinFunction
from twinray.shared.models.matching_pairs.network import translator_from_weights, translator_twin
from twinray.shared.models.normal_synthesis.network import normal_synthesizer_from_weights, resize_labels, segment_anatomy
from twinray.shared.models.segmentation.network import segmenter_from_weights
from twinray.shared.platform.config import Settings
from twinray.shared.platform.imaging import unit_images
from twinray.shared.platform.registry import LoadedModel, ModelRegistry
from twinray.shared.platform.storage import open_store
from twinray.shared.synthesis.pseudo_pairs import calibrated_twin

MODEL_NAME = "normal-synthesis"
SEGMENTER_NAME = "segmentation"


def trained_twins(
    translator: LoadedModel, generators: Sequence[LoadedModel], segmenter: torch.nn.Module, val_normal: torch.Tensor
) -> dict[str, TwinFunction]:
    """The benchmark's twin rows of one trained seed: the translator raw and calibrated (its baseline
    measured on the val normals (N,1,H,W)), and each generator (`no_anatomy` when trained without the map)."""
    translate = translator_twin(translator_from_weights(translator.config, translator.weights), translator.config["input_size"])
    twins = {"cyclegan": translate, "cyclegan_calibrated": calibrated_twin(translate, val_normal, torch.device("cpu"))}
    for generator in generators:
        row = "anatomy_prior" if generator.config.get("use_anatomy", True) else "no_anatomy"
        twins[row] = generator_twin(normal_synthesizer_from_weights(generator.config, generator.weights), segmenter)
    return twins


@dataclasses.dataclass(frozen=True)
class Published:
    """A published generator with the segmenter and translator versions it was trained with."""

    generator: LoadedModel
    segmenter: torch.nn.Module
    segmenter_version: int
    translator: LoadedModel

    @classmethod
    def load(cls, registry: ModelRegistry, version: str) -> Published:
        loaded = registry.load(MODEL_NAME, registry.resolve(MODEL_NAME, version))
        training = json.loads(registry.read_file(MODEL_NAME, loaded.version, "training.json"))
        seg = registry.load(SEGMENTER_NAME, training["segmentation"]["version"])
        translator = registry.load(training["matching_pairs"]["name"], training["matching_pairs"]["version"])
        return cls(loaded, segmenter_from_weights(seg.config, seg.weights), seg.version, translator)


def evaluate_published(
    settings: Settings, *, version: str = "latest", dataset: str = "cxr-phantoms-v2", split: str = "test"
) -> dict:
    """`twinray eval normal-synthesis`: a published generator (row `anatomy_prior`), the translator and
    segmenter versions it was trained with, and the no-learning rows, scored once on `dataset`/`split`."""
    registry = ModelRegistry(open_store(settings))
    published = Published.load(registry, version)
    val, test = (HeldOut.of(read_phantom_split(registry.store, dataset, name)) for name in ("val", split))
    cpu = torch.device("cpu")
    once, chosen = no_learning_rows(val, test, published.segmenter, cpu)
    twins = trained_twins(published.translator, [published.generator], published.segmenter, val.normal)
    rows = benchmark_rows(once, [twin_rows(test, twins, cpu)])
    scored = {"dataset": dataset, "split": split, "abnormal_images": len(test.image), "normal_images": len(test.normal)}
    models = {
        published.translator.name: published.translator.version,
        MODEL_NAME: published.generator.version,
        SEGMENTER_NAME: published.segmenter_version,
    }
    protocol = published_protocol(scored, models, anatomy_by=SEGMENTER_NAME, lung_highpass=chosen)
    protocol["selection"] = f"{protocol['selection']}; {HIGHPASS_SELECTION}"
    return evaluation_report(protocol, rows)


def one_case_per_pathology(arrays: PhantomArrays) -> list[tuple[str, int]]:
    """(class name, image index) for each pathology class present in `arrays`: the first image holding
    that class only, else the first holding it among others."""
    picks = []
    for index, name in enumerate(PATHOLOGIES):
        has = [i for i in range(len(arrays)) if index in arrays.lesion_classes[i][: arrays.box_count[i]]]
        alone = [i for i in has if set(arrays.lesion_classes[i][: arrays.box_count[i]]) == {index}]
        if has:
            picks.append((name, (alone or has)[0]))
    return picks


def pathology_cases(settings: Settings, *, version: str = "latest", dataset: str, split: str = "test") -> list[dict]:
    """One held-out abnormal case per pathology class in `dataset`/`split` (an image with that class only
    when there is one), with the published generator's twin: the rows of a figure, titled by class."""
    registry = ModelRegistry(open_store(settings))
    published = Published.load(registry, version)
    arrays = read_phantom_split(registry.store, dataset, split)
    model = normal_synthesizer_from_weights(published.generator.config, published.generator.weights)
    cases = []
    for name, pick in one_case_per_pathology(arrays):
        image = unit_images(arrays.image[pick : pick + 1])
        with torch.no_grad():
            twin = generator_twin(model, published.segmenter)(image)
            anatomy = segment_anatomy(published.segmenter, image)[0]
        cases.append(
            {
                "title": name,
                "image": image[0, 0].numpy(),
                "anatomy": resize_labels(anatomy[None], image.shape[-1])[0].numpy(),
                "twin": twin[0, 0].numpy(),
                "residual": (image - twin)[0, 0].numpy(),
                "lesion_mask": arrays.lesion_mask[pick],
            }
        )
    return cases

"""`twinray train normal-synthesis`: the anatomy-conditioned (SPADE) twin generator, on Ray Train.

Each worker reads the CycleGAN pseudo-pairs (with the training split's normal images) from the
artifact store, labels every training image's anatomy ONCE with the frozen published segmenter, and
trains the generator against a patch discriminator with four losses (reconstruction to the pair's
normal, LSGAN, anatomy consistency, identity on normals). The pairs are the pseudo-pairs, healthy
images with generic lesions drawn in afresh at every step (twinray.shared.synthesis.synthetic_lesions),
or both (`pairs`). Every epoch rank 0 measures the twins of the HELD-OUT phantoms against their
true twins (what the phantoms are for: real data has no true twin) and checkpoints into the store;
the driver publishes the best checkpoint with the segmenter and translator versions it depended on.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import ray.train.torch
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from twinray.shared.data.anatomy import LUNGS
from twinray.shared.data.phantoms.dataset import read_phantom_split
from twinray.shared.data.pseudo_pairs import read_pseudo_pair_manifest, read_pseudo_pairs
from twinray.shared.evaluation.twin import evaluate_twin_function, generator_twin
from twinray.shared.models.components import gan_losses as losses
from twinray.shared.models.components.patchgan import PatchDiscriminator
from twinray.shared.models.components.twin import batched, to_input_size
from twinray.shared.models.normal_synthesis.network import (
    AnatomyConditionedGenerator,
    SpadeConfig,
    resize_labels,
    segment_anatomy,
)
from twinray.shared.models.segmentation.network import AnatomySegmenter, segmenter_from_weights
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.imaging import unit_images
from twinray.shared.platform.registry import ModelRegistry, ModelVersion
from twinray.shared.platform.storage import ArtifactStore
from twinray.shared.synthesis.synthetic_lesions import LesionDraw, draw_lesions
from twinray.training import harness
from twinray.training.autocast import autocast
from twinray.training.config import TrainConfig

MODEL_NAME = "normal-synthesis"
SEGMENTER_NAME = "segmentation"
# Chosen without lesion masks or true twins (real data has neither): on every HOLDOUT_EVERY-th pair and
# normal image, held out of training, minus the pair error and the change on the normal
# (`label_free_selection`). The true-twin scores on the dataset's val split are logged, never used to choose.
SCORE = "val_selection"
HOLDOUT_EVERY = 10
# Where a pair's normal comes from: the CycleGAN pseudo-normals, generic lesions drawn into the training
# split's healthy images (the healthy image is the target), or both (docs/decisions/0109-generic-lesion-pairs.md).
PAIR_WORDS = {
    "pseudo": "the CycleGAN pseudo-pairs",
    "synthetic": "generic lesions drawn into the healthy images",
    "both": "the CycleGAN pseudo-pairs and generic lesions drawn into the healthy images",
}
PAIR_SOURCES = tuple(PAIR_WORDS)


@dataclasses.dataclass(frozen=True)
class NormalSynthesisTrainConfig(TrainConfig):
    pseudo_pairs: str = "cxr-phantoms-v2-pseudo-pairs"
    dataset: str = "cxr-phantoms-v2"  # its val split (held-out phantoms with true twins) scores each epoch
    segmentation_version: int | str = "latest"  # resolved to its number before Ray starts
    epochs: int = 8
    pairs: str = "both"  # one of PAIR_SOURCES
    batch_size: int = 8
    learning_rate: float = 2e-3  # cosine-annealed to 0 over the run
    # The twin terms are squared errors of ~1e-3 (`change_balanced_error`); x1000 keeps them well above
    # the adversarial and anatomy terms.
    lambda_reconstruction: float = 1000.0
    lambda_identity: float = 1000.0
    # Kept small, so the lesion signal of the twin terms outweighs the patch discriminator's
    # (docs/decisions/0105-small-adversarial-weight.md, measured with the earlier L1 terms).
    lambda_adversarial: float = 0.1
    lambda_anatomy: float = 1.0
    discriminator_channels: int = 32
    seed: int = 0
    workers: int = 1
    use_gpu: bool = False
    model: SpadeConfig = SpadeConfig()


def _training_tensors(
    store: ArtifactStore, config: NormalSynthesisTrainConfig, segmenter: AnatomySegmenter, device: torch.device
) -> dict[str, torch.Tensor]:
    """Pseudo-pairs and normal images as tensors, with each image's anatomy labelled once by the frozen
    segmenter: at the segmenter's size (the anatomy-consistency target), at the generator's (its
    condition) and, for the normals, their lungs at full size (where generic lesions are drawn)."""
    pairs = read_pseudo_pairs(store, config.pseudo_pairs)
    size = config.model.input_size
    abnormal, pseudo_normal, normal = unit_images(pairs.abnormal), unit_images(pairs.pseudo_normal), unit_images(pairs.normal)
    anatomy = batched(lambda x: segment_anatomy(segmenter, x), abnormal, device)
    normal_anatomy = batched(lambda x: segment_anatomy(segmenter, x), normal, device)
    return {
        "abnormal": abnormal,
        "pseudo_normal_low": to_input_size(pseudo_normal, size),
        "anatomy": anatomy,
        "anatomy_low": resize_labels(anatomy, size),
        "normal": normal,
        "normal_low": to_input_size(normal, size),
        "normal_anatomy": normal_anatomy,
        "normal_anatomy_low": resize_labels(normal_anatomy, size),
        "normal_lungs": torch.isin(resize_labels(normal_anatomy, normal.shape[-1]), torch.tensor(LUNGS)),
    }


def _held_out(data: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(training tensors, held-out tensors): every HOLDOUT_EVERY-th abnormal pair and normal image held out."""
    train, held = {}, {}
    for key, tensor in data.items():
        out = (torch.arange(len(tensor)) % HOLDOUT_EVERY) == HOLDOUT_EVERY - 1
        train[key], held[key] = tensor[~out], tensor[out]
    return train, held


def pair_rows(data: dict[str, torch.Tensor], pairs: str) -> dict[str, torch.Tensor]:
    """The training pairs of `pairs` (one of PAIR_SOURCES) as rows: `source` (full size), `target_low`,
    the source's anatomy at both sizes, and for healthy sources `draw` (lesions are to be drawn
    into `source` within its `lungs`; the healthy image is the target)."""
    parts = []
    if pairs in ("pseudo", "both"):
        n = len(data["abnormal"])
        parts.append(
            {
                "source": data["abnormal"],
                "target_low": data["pseudo_normal_low"],
                "anatomy": data["anatomy"],
                "anatomy_low": data["anatomy_low"],
                "lungs": torch.zeros((n, *data["abnormal"].shape[-2:]), dtype=torch.bool),
                "draw": torch.zeros(n, dtype=torch.bool),
            }
        )
    if pairs in ("synthetic", "both"):
        parts.append(
            {
                "source": data["normal"],
                "target_low": data["normal_low"],
                "anatomy": data["normal_anatomy"],
                "anatomy_low": data["normal_anatomy_low"],
                "lungs": data["normal_lungs"],
                "draw": torch.ones(len(data["normal"]), dtype=torch.bool),
            }
        )
    if not parts:
        raise ValueError(f"pairs must be one of {PAIR_SOURCES}, got {pairs!r}")
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def lesion_draw(model: SpadeConfig) -> LesionDraw:
    """The generic lesions a generator is trained to remove: a one-signed twin (it only removes density)
    gets no density-loss lesions, which it could not undo."""
    return LesionDraw(loss_share=0.0) if model.negative_residual else LesionDraw()


def with_lesions(rows: dict[str, torch.Tensor], generator: torch.Generator, draw: LesionDraw) -> torch.Tensor:
    """The rows' sources with generic lesions drawn into the healthy ones (`draw`), on the CPU."""
    source, marked = rows["source"].cpu(), rows["draw"].cpu()
    if not marked.any():
        return source
    source = source.clone()
    source[marked] = draw_lesions(source[marked], rows["lungs"].cpu()[marked], generator, draw)
    return source


def label_free_selection(
    generator: AnatomyConditionedGenerator,
    held: dict[str, torch.Tensor],
    held_normal: dict[str, torch.Tensor],
    device: torch.device,
) -> dict[str, float]:
    """Scores that need no lesion mask or true twin, on held-out pairs `held` (`pair_rows`, lesions
    already drawn) and normals: the twins' `change_balanced_error` to the pairs' normals and the mean
    squared change of healthy images; `selection` = minus their sum."""
    size = generator.config.input_size

    def twins(images: torch.Tensor, anatomy: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat(
                [
                    generator(images[i : i + 16].to(device), anatomy[i : i + 16].to(device)).cpu()
                    for i in range(0, len(images), 16)
                ]
            )

    source_low = to_input_size(held["source"], size)
    fit = losses.change_balanced_error(twins(source_low, held["anatomy_low"]), held["target_low"], source_low)
    normal = held_normal["normal_low"]
    identity = losses.change_balanced_error(twins(normal, held_normal["normal_anatomy_low"]), normal, normal)
    return {"held_out_pair_error": float(fit), "healthy_change": float(identity), "selection": -float(fit + identity)}


def train_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    worker = harness.worker_context(loop_config, NormalSynthesisTrainConfig)
    config, device = worker.config, worker.device
    torch.manual_seed(worker.rank_seed("torch"))
    seg_model = ModelRegistry(worker.store).load(SEGMENTER_NAME, config.segmentation_version)
    segmenter = segmenter_from_weights(seg_model.config, seg_model.weights).to(device).requires_grad_(False)
    data, held_normal = _held_out(_training_tensors(worker.store, config, segmenter, device))
    rows, held, draw = pair_rows(data, config.pairs), pair_rows(held_normal, config.pairs), lesion_draw(config.model)
    if worker.is_rank0:  # the held-out pairs get their lesions once, the same for every epoch
        held["source"] = with_lesions(held, torch.Generator().manual_seed(worker.shared_seed("held-out-lesions", 0)), draw)
    val = read_phantom_split(worker.store, config.dataset, "val") if worker.is_rank0 else None

    size = config.model.input_size
    names = ("source", "target_low", "anatomy", "anatomy_low", "lungs", "draw")
    loader = ray.train.torch.prepare_data_loader(
        DataLoader(
            TensorDataset(*(rows[name] for name in names)),
            batch_size=config.batch_size,
            shuffle=True,
            drop_last=True,
        )
    )
    generator = ray.train.torch.prepare_model(AnatomyConditionedGenerator(config.model))
    discriminator = ray.train.torch.prepare_model(PatchDiscriminator(config.discriminator_channels))
    g_opt = torch.optim.Adam(generator.parameters(), lr=config.learning_rate, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=config.learning_rate, betas=(0.5, 0.999))
    # Annealed, so the lesion residual settles (docs/decisions/0106-annealed-twin-learning-rate.md).
    schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs * len(loader)) for opt in (g_opt, d_opt)]
    normals, lesions = worker.rank_generator("normal-draws"), worker.rank_generator("lesions")

    for epoch in range(config.epochs):
        if worker.world_size > 1:
            loader.sampler.set_epoch(epoch)
        generator.train()
        started, sums, steps = time.time(), {}, 0
        for batch in loader:
            batch = dict(zip(names, batch))
            abnormal, target_low, anatomy = with_lesions(batch, lesions, draw).to(device), batch["target_low"], batch["anatomy"]
            pick = torch.randint(len(data["normal_low"]), (len(abnormal),), generator=normals)
            normal_low, normal_anatomy_low = data["normal_low"][pick].to(device), data["normal_anatomy_low"][pick].to(device)
            abnormal_low = to_input_size(abnormal, size)
            with autocast(device):  # abnormal and normal inputs in one forward pass (one DDP reduction)
                twins = generator(torch.cat([abnormal_low, normal_low]), torch.cat([batch["anatomy_low"], normal_anatomy_low]))
            twin_low, normal_twin_low = twins.float().chunk(2)

            with autocast(device):  # real normals and twins in one pass too
                real, fake = discriminator(torch.cat([normal_low, twin_low.detach()])).float().chunk(2)
                d_loss = losses.lsgan_discriminator_loss(real, fake)
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()

            # The segmenter sees the twin it would see at inference: the full-resolution composition.
            twin_full = (abnormal - F.interpolate(abnormal_low - twin_low, size=abnormal.shape[-2:], mode="bilinear")).clamp(0, 1)
            with autocast(device):
                parts = {
                    "reconstruction": losses.change_balanced_error(twin_low, target_low, abnormal_low),
                    "adversarial": losses.lsgan_generator_loss(discriminator(twin_low).float()),
                    "anatomy": losses.anatomy_consistency_loss(segmenter, twin_full, anatomy),
                    "identity": losses.change_balanced_error(normal_twin_low, normal_low, normal_low),
                }
            g_loss = sum(getattr(config, f"lambda_{name}") * value for name, value in parts.items())
            g_opt.zero_grad(set_to_none=True)
            g_loss.backward()
            g_opt.step()
            for scheduler in schedulers:
                scheduler.step()
            for name, value in {**parts, "g": g_loss, "d": d_loss}.items():
                sums[name] = sums.get(name, 0.0) + value.item()
            steps += 1

        metrics = {"epoch": epoch + 1, **{f"train_{k}_loss": v / max(steps, 1) for k, v in sums.items()}}
        metrics["epoch_seconds"] = time.time() - started
        metrics["step_seconds"] = metrics["epoch_seconds"] / max(steps, 1)
        if worker.is_rank0:
            model = harness.unwrap(generator).eval()
            scores = evaluate_twin_function(generator_twin(model, segmenter), val, segmenter=segmenter, device=device)
            scores |= label_free_selection(model, held, held_normal, device)
            metrics.update({f"val_{k}": v for k, v in scores.items()})
            print(
                f"[normal-synthesis] epoch {epoch + 1}/{config.epochs} G {metrics['train_g_loss']:.3f} "
                f"D {metrics['train_d_loss']:.3f} | val selection {scores['selection']:.5f} (held-out pair error "
                f"{scores['held_out_pair_error']:.5f}, healthy change {scores['healthy_change']:.5f}); true-twin check: "
                f"residual in lesion {scores['residual_in_lesion']:.3f} "
                f"AUROC {scores['residual_auroc']:.3f} L1 to twin {scores['l1_to_twin']:.4f} "
                f"anatomy Dice {scores['anatomy_dice']:.3f} ({metrics['epoch_seconds']:.0f}s, "
                f"{metrics['step_seconds']:.2f}s/step)",
                flush=True,
            )
        harness.save_checkpoint(harness.unwrap(generator).state_dict(), epoch + 1, metrics)


def prepare(store: ArtifactStore, config: NormalSynthesisTrainConfig) -> harness.Prepared[NormalSynthesisTrainConfig]:
    """The segmenter version is resolved once here, so every worker conditions on the same anatomy
    maps; it is recorded with the matching-pairs translator that produced the pseudo-pairs."""
    segmentation_version = ModelRegistry(store).resolve(SEGMENTER_NAME, config.segmentation_version)
    if config.pairs not in PAIR_SOURCES:
        raise InvalidInput(f"pairs must be one of {', '.join(PAIR_SOURCES)}, got {config.pairs!r}")
    pairs = read_pseudo_pair_manifest(store, config.pseudo_pairs)
    if min(pairs["counts"].values()) < HOLDOUT_EVERY:
        raise InvalidInput(
            f"pseudo-pairs {config.pseudo_pairs!r} hold {pairs['counts']}: the generator needs at least {HOLDOUT_EVERY} "
            f"abnormal and {HOLDOUT_EVERY} normal images (every {HOLDOUT_EVERY}th is held out to choose its checkpoint)"
        )
    trained = {name: count - count // HOLDOUT_EVERY for name, count in pairs["counts"].items()}
    rows = {"pseudo": trained["abnormal"], "synthetic": trained["normal"]}.get(config.pairs, sum(trained.values()))
    if rows // config.workers < config.batch_size:
        raise InvalidInput(
            f"{rows} training pairs ({config.pairs}) make no batch of {config.batch_size} on each of {config.workers} "
            f"workers: lower --batch-size or --workers, or use more images"
        )
    config = dataclasses.replace(config, segmentation_version=segmentation_version)
    return harness.Prepared(
        config,
        published_config={**config.model.to_dict(), "segmentation_version": segmentation_version},
        training={
            "segmentation": {"name": SEGMENTER_NAME, "version": segmentation_version},
            "matching_pairs": pairs["translator"],
            "pseudo_pairs_source": pairs["source"],
        },
    )


def card(run: harness.Trained[NormalSynthesisTrainConfig]) -> str:
    """What the published generator is, what it depends on, and how close its twins came to the true ones."""
    config, metrics, translator = run.config, run.metrics, run.prepared.training["matching_pairs"]
    return (
        f"# Anatomy-conditioned normal synthesis\n\nSPADE U-Net generator (Park et al. 2019), channels "
        f"{list(config.model.channels)}, input {config.model.input_size}px, residual "
        f"{'r <= 0 (removes density only)' if config.model.negative_residual else 'of either sign'}; "
        f"conditioned on `{SEGMENTER_NAME}` v{config.segmentation_version} anatomy maps.\n"
        f"Trained on {PAIR_WORDS[config.pairs]} of `{config.pseudo_pairs}` (translator {translator['name']} "
        f"v{translator['version']}) for {config.epochs} epochs with {config.workers} Ray Train worker(s); best epoch "
        f"{run.best_epoch} by {SCORE} (label-free, on every {HOLDOUT_EVERY}th pair and normal held out: change-balanced "
        f"squared error to the pair's normal {metrics.get('val_held_out_pair_error', float('nan')):.5f}, mean squared change "
        f"of healthy images {metrics.get('val_healthy_change', float('nan')):.5f}). Checked, not chosen, on "
        f"`{config.dataset}`/val against the true twins: residual in lesion {metrics.get('val_residual_in_lesion', float('nan')):.3f}, residual AUROC "
        f"{metrics.get('val_residual_auroc', float('nan')):.3f}, L1 to the true twin "
        f"{metrics.get('val_l1_to_twin', float('nan')):.4f}.\nPhantoms only: not validated on real radiographs.\n"
    )


def normal_synthesis_config(pseudo_pairs: str = "", **fields: Any) -> NormalSynthesisTrainConfig:
    """The training config of `fields`; no `pseudo_pairs` means the dataset's own, `<dataset>-pseudo-pairs`."""
    config = NormalSynthesisTrainConfig(**fields)
    return dataclasses.replace(config, pseudo_pairs=pseudo_pairs or f"{config.dataset}-pseudo-pairs")


SPEC = harness.TrainSpec(
    name=MODEL_NAME,
    help="anatomy-conditioned (SPADE) healthy-twin generator",
    config_class=NormalSynthesisTrainConfig,
    score=SCORE,
    loop=train_loop,
    prepare=prepare,
    card=card,
    configure=normal_synthesis_config,
    flags=(
        harness.Flag("--pseudo-pairs", "", "pseudo-pair dataset (default: <dataset>-pseudo-pairs)"),
        harness.Flag("--segmentation-version", "latest", "segmenter that labels the anatomy"),
        harness.Flag("--pairs", "both", f"training pairs: {', '.join(PAIR_SOURCES)} (pseudo-pairs, generic lesions, both)"),
    ),
)


def train_normal_synthesis(settings: Settings, config: NormalSynthesisTrainConfig) -> ModelVersion:
    """Train on Ray and publish the best checkpoint as the next `normal-synthesis` version."""
    return harness.train_and_publish(SPEC, settings, config)

"""`twinray train matching-pairs`: an unpaired CycleGAN (Zhu et al. 2017) between abnormal and
normal phantom CXRs, guided by a disease critic, trained with Ray Train; and the pseudo-pairs it
writes for normal synthesis.

Real data has no healthy twin of a diseased radiograph, so the translator is trained the way it
must be on real data: abnormal and normal images of DIFFERENT people, shuffled independently, and
the phantoms' true twins are never shown to it. The held-out val split does carry true twins (that
is what phantoms are for), so every epoch rank 0 measures how much of the translation hits the
real lesions; the best checkpoint by that score is published.

Published weights (`weights.pt`): {"abnormal_to_normal": state dict, "normal_to_abnormal": state
dict}, both `ResidualTranslator`s of the published `TranslatorConfig`;
`twinray.shared.models.matching_pairs.network.translator_from_weights` rebuilds the first.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import ray.train.torch
import torch
import torch.nn.functional as F
from torch import nn

from twinray.shared.data.phantoms.dataset import PhantomArrays, read_phantom_manifest, read_phantom_split
from twinray.shared.evaluation.twin import evaluate_translator
from twinray.shared.models.components.gan_losses import lsgan_discriminator_loss, lsgan_generator_loss
from twinray.shared.models.components.patchgan import PatchDiscriminator
from twinray.shared.models.components.twin import to_input_size
from twinray.shared.models.matching_pairs.network import (
    ResidualTranslator,
    TranslatorConfig,
    disease_logit,
)
from twinray.shared.platform.config import Settings
from twinray.shared.platform.imaging import unit_images
from twinray.shared.platform.registry import ModelVersion
from twinray.shared.platform.storage import ArtifactStore
from twinray.training import harness
from twinray.training.autocast import autocast
from twinray.training.config import TrainConfig

MODEL_NAME = "matching-pairs"
# Chosen without lesion masks or true twins (real data has neither): the disease critic's verdict on
# the twins of abnormal val images, minus the share of the change that also hits healthy val images
# (`label_free_selection`). The true-twin scores are logged beside it, never used to choose.
SCORE = "val_selection"
_SIGNS = {
    0: "a change of either sign",
    -1: "one-signed: the twin only loses density",
    1: "one-signed: the twin only gains density",
}


@dataclasses.dataclass(frozen=True)
class MatchingPairsTrainConfig(TrainConfig):
    dataset: str = "cxr-phantoms-v2"
    epochs: int = 8
    batch_size: int = 4
    learning_rate: float = 2e-4
    lambda_cycle: float = 10.0
    lambda_identity: float = 5.0
    # Weight of the disease critic's verdict on the translations (see `train_step`).
    lambda_disease: float = 1.0
    # Weight of the minimal-change term: mean |G(a) - a| on ABNORMAL images (see `train_step`).
    lambda_minimal_change: float = 1.0
    discriminator_channels: int = 16
    critic_learning_rate: float = 1e-3
    critic_warmup_steps: int = 400  # critic-only steps before the translators start (docs/decisions/0101-critic-warm-up.md)
    seed: int = 0
    workers: int = 1
    use_gpu: bool = False
    model: TranslatorConfig = TranslatorConfig(channels=8, n_res_blocks=4, downsamplings=3)


@dataclasses.dataclass(frozen=True)
class CycleGAN:
    """The networks: G (abnormal -> normal), F (normal -> abnormal), a PatchGAN per domain, and the
    disease critic (a patch network read through `disease_logit`: is there a lesion anywhere?)."""

    to_normal: nn.Module
    to_abnormal: nn.Module
    judge_normal: nn.Module
    judge_abnormal: nn.Module
    critic: nn.Module

    @classmethod
    def build(cls, model: TranslatorConfig, discriminator_channels: int) -> CycleGAN:
        return cls(
            ResidualTranslator(model),
            ResidualTranslator(model, sign=-model.residual_sign),
            PatchDiscriminator(discriminator_channels),
            PatchDiscriminator(discriminator_channels),
            PatchDiscriminator(discriminator_channels),
        )

    def networks(self) -> tuple[nn.Module, ...]:
        return self.to_normal, self.to_abnormal, self.judge_normal, self.judge_abnormal, self.critic

    def generators(self) -> list[nn.Parameter]:
        return [*self.to_normal.parameters(), *self.to_abnormal.parameters()]

    def discriminators(self) -> list[nn.Parameter]:
        return [*self.judge_normal.parameters(), *self.judge_abnormal.parameters()]


@dataclasses.dataclass(frozen=True)
class Optimisers:
    generators: torch.optim.Optimizer
    discriminators: torch.optim.Optimizer
    critic: torch.optim.Optimizer

    @classmethod
    def build(cls, nets: CycleGAN, learning_rate: float, critic_learning_rate: float) -> Optimisers:
        adam = lambda params, lr: torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))  # noqa: E731 - the paper's betas
        return cls(
            adam(nets.generators(), learning_rate),
            adam(nets.discriminators(), learning_rate),
            adam(nets.critic.parameters(), critic_learning_rate),
        )


def _diseased(nets: CycleGAN, images: torch.Tensor, label: float) -> torch.Tensor:
    """Binary cross-entropy of the critic's image-level verdict against `label` (1 = diseased)."""
    logits = disease_logit(nets.critic, images).float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))


def critic_step(nets: CycleGAN, opt: torch.optim.Optimizer, abnormal: torch.Tensor, normal: torch.Tensor) -> float:
    """One update of the disease critic on REAL images only: abnormal -> 1, normal -> 0. These are
    the image labels the unpaired sets already carry; no lesion mask or twin is read. (Translations
    are not labelled diseased, GAN-style: docs/decisions/0102-critic-on-real-images-only.md.)"""
    with autocast(abnormal.device):
        loss = 0.5 * (_diseased(nets, abnormal, 1.0) + _diseased(nets, normal, 0.0))
    opt.zero_grad(set_to_none=True)  # also drops what the generator step left on the critic
    loss.backward()
    opt.step()
    return loss.item()


def discriminator_step(
    nets: CycleGAN,
    opt: torch.optim.Optimizer,
    abnormal: torch.Tensor,
    normal: torch.Tensor,
    fake_normal: torch.Tensor,
    fake_abnormal: torch.Tensor,
) -> float:
    """One update of both PatchGANs: real images -> 1, translations -> 0 (Eq. 1 with LSGAN)."""
    D_n, D_a = nets.judge_normal, nets.judge_abnormal
    with autocast(abnormal.device):
        loss = lsgan_discriminator_loss(D_n(normal).float(), D_n(fake_normal.detach()).float()) + lsgan_discriminator_loss(
            D_a(abnormal).float(), D_a(fake_abnormal.detach()).float()
        )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def train_step(
    nets: CycleGAN,
    opts: Optimisers,
    abnormal: torch.Tensor,
    normal: torch.Tensor,
    *,
    lambda_cycle: float,
    lambda_identity: float,
    lambda_disease: float,
    lambda_minimal_change: float = 0.0,
) -> dict[str, float]:
    """One update on unpaired batches (N,1,S,S) of each domain: generators, PatchGANs, critic.

    The generators' loss is CycleGAN's (LSGAN adversarial + cycle + identity) plus the disease
    critic's verdict (G(abnormal) must look lesion-free, F(normal) diseased) and a minimal-change
    term, mean |G(a) - a|: the twin is the same patient. The critic's soft-max pooled verdict sends
    the gradient to the patches that still look diseased, so the translator finds the lesions far
    sooner than with a PatchGAN alone (docs/decisions/0103-disease-critic-guides-the-translator.md).
    A critic trained on real images only can be fooled in other ways than by removing the lesion;
    the PatchGANs, the cycle, identity and minimal-change terms hold that back, not always enough
    (see the model card's scores; docs/decisions/0104-minimal-change-weight.md).
    """
    G, F_, D_n, D_a = nets.to_normal, nets.to_abnormal, nets.judge_normal, nets.judge_abnormal
    with autocast(abnormal.device):
        fake_normal, fake_abnormal = G(abnormal).float(), F_(normal).float()
        adversarial = lsgan_generator_loss(D_n(fake_normal).float()) + lsgan_generator_loss(D_a(fake_abnormal).float())
        disease = _diseased(nets, fake_normal, 0.0) + _diseased(nets, fake_abnormal, 1.0)
        # Cycle consistency (Eq. 2): F(G(a)) = a and G(F(n)) = n.
        cycle = (F_(fake_normal).float() - abnormal).abs().mean() + (G(fake_abnormal).float() - normal).abs().mean()
        # Identity mapping (Sec. 5.2): a real image of the target domain passes unchanged.
        identity = (G(normal).float() - normal).abs().mean() + (F_(abnormal).float() - abnormal).abs().mean()
        # The twin is the SAME patient: the smallest change that satisfies the critic wins.
        minimal_change = (fake_normal - abnormal).abs().mean()
        g_loss = (
            adversarial
            + lambda_disease * disease
            + lambda_cycle * cycle
            + lambda_identity * identity
            + lambda_minimal_change * minimal_change
        )
    opts.generators.zero_grad(set_to_none=True)
    g_loss.backward()
    opts.generators.step()
    d_loss = discriminator_step(nets, opts.discriminators, abnormal, normal, fake_normal, fake_abnormal)
    c_loss = critic_step(nets, opts.critic, abnormal, normal)
    losses = {
        "g": g_loss,
        "adversarial": adversarial,
        "disease": disease,
        "cycle": cycle,
        "identity": identity,
        "minimal_change": minimal_change,
    }
    return {**{name: value.item() for name, value in losses.items()}, "d": d_loss, "critic": c_loss}


def _domains(arrays: PhantomArrays, input_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two unpaired domains at the generators' size: abnormal images and normal images (never the twins)."""
    abnormal = arrays.lesion_seed >= 0
    return to_input_size(unit_images(arrays.image[abnormal]), input_size), to_input_size(
        unit_images(arrays.image[~abnormal]), input_size
    )


def label_free_selection(
    translator: nn.Module, critic: nn.Module, abnormal: torch.Tensor, normal: torch.Tensor
) -> dict[str, float]:
    """Scores that need only image labels, on images (N,1,S,S) at the translator's size: the share of
    abnormal images whose twin the disease critic calls normal, and how much of the change a twin makes
    happens on healthy images (mean |twin - image| on normals over that on abnormals; doing nothing has
    no change to share and scores 1). `selection` = the first minus the second."""
    with torch.no_grad():
        twins = torch.cat([translator.eval()(abnormal[i : i + 16]) for i in range(0, len(abnormal), 16)])
        normal_twins = torch.cat([translator(normal[i : i + 16]) for i in range(0, len(normal), 16)])
        called_normal = float((disease_logit(critic.eval(), twins) < 0).float().mean())
    change = float((twins - abnormal).abs().mean())
    share = float((normal_twins - normal).abs().mean()) / change if change > 0 else 1.0
    return {"critic_normal_rate": called_normal, "healthy_change_share": share, "selection": called_normal - share}


def _epoch_batches(count: int, batch_size: int, *, seed: int, rank: int, world: int) -> list[torch.Tensor]:
    """This rank's index batches of one epoch's permutation (`seed` shared by all ranks, so ranks are disjoint)."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return list(order[rank::world].split(batch_size))


def train_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    worker = harness.worker_context(loop_config, MatchingPairsTrainConfig)
    config, device, rank, world = worker.config, worker.device, worker.rank, worker.world_size
    torch.manual_seed(worker.shared_seed("weights"))  # same initial weights on every rank (DDP broadcasts them anyway)
    abnormal, normal = _domains(read_phantom_split(worker.store, config.dataset, "train"), config.model.input_size)
    val = read_phantom_split(worker.store, config.dataset, "val") if worker.is_rank0 else None
    val_domains = _domains(val, config.model.input_size) if val is not None else None

    built = CycleGAN.build(config.model, config.discriminator_channels)
    nets = CycleGAN(*(ray.train.torch.prepare_model(net) for net in built.networks()))
    opts = Optimisers.build(nets, config.learning_rate, config.critic_learning_rate)
    steps = min(len(abnormal), len(normal)) // (config.batch_size * world)
    # Constant learning rate for the first half, then linear decay to zero (the paper's schedule).
    half = config.epochs * steps / 2
    decay = lambda step: min(1.0, (config.epochs * steps - step) / max(half, 1))  # noqa: E731
    schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, decay) for opt in (opts.generators, opts.discriminators)]

    # The critic first learns which real images are diseased, so its first verdicts mean something.
    draws = worker.rank_generator("critic-warmup")
    for _ in range(config.critic_warmup_steps):
        pick_a, pick_n = (torch.randint(len(domain), (config.batch_size,), generator=draws) for domain in (abnormal, normal))
        critic_loss = critic_step(nets, opts.critic, abnormal[pick_a].to(device), normal[pick_n].to(device))
    if worker.is_rank0 and config.critic_warmup_steps:
        print(f"[matching-pairs] disease critic warm-up: {config.critic_warmup_steps} steps, loss {critic_loss:.3f}", flush=True)

    for epoch in range(config.epochs):
        for net in nets.networks():
            net.train()
        started, sums = time.time(), {}
        # Unpaired: each domain is shuffled with its own permutation, a different one every epoch.
        batches_a = _epoch_batches(
            len(abnormal), config.batch_size, seed=worker.shared_seed("abnormal-order", epoch), rank=rank, world=world
        )
        batches_n = _epoch_batches(
            len(normal), config.batch_size, seed=worker.shared_seed("normal-order", epoch), rank=rank, world=world
        )
        for index_a, index_n in list(zip(batches_a, batches_n))[:steps]:
            losses = train_step(
                nets,
                opts,
                abnormal[index_a].to(device),
                normal[index_n].to(device),
                lambda_cycle=config.lambda_cycle,
                lambda_identity=config.lambda_identity,
                lambda_disease=config.lambda_disease,
                lambda_minimal_change=config.lambda_minimal_change,
            )
            for scheduler in schedulers:
                scheduler.step()
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value
        metrics = {"epoch": epoch + 1, **{f"train_{k}_loss": v / max(steps, 1) for k, v in sums.items()}}
        metrics["epoch_seconds"] = time.time() - started
        metrics["step_seconds"] = metrics["epoch_seconds"] / max(steps, 1)
        if worker.is_rank0:
            translator = harness.unwrap(nets.to_normal)
            scores = evaluate_translator(translator, val, config.model.input_size)
            scores |= label_free_selection(translator, harness.unwrap(nets.critic), *(x.to(device) for x in val_domains))
            metrics.update({f"val_{k}": v for k, v in scores.items()})
            print(
                f"[matching-pairs] epoch {epoch + 1}/{config.epochs} G {metrics['train_g_loss']:.3f} "
                f"(cycle {metrics['train_cycle_loss']:.4f}, identity {metrics['train_identity_loss']:.4f}) "
                f"disease {metrics['train_disease_loss']:.3f} D {metrics['train_d_loss']:.3f} critic "
                f"{metrics['train_critic_loss']:.3f} | val selection {scores['selection']:.3f} (critic calls "
                f"{scores['critic_normal_rate']:.2f} of twins normal, healthy change share {scores['healthy_change_share']:.2f}); "
                f"true-twin check: residual in lesion {scores['residual_in_lesion']:.3f} "
                f"AUROC {scores['residual_auroc']:.3f} L1 to twin {scores['l1_to_twin']:.4f} "
                f"(input {scores['l1_input_to_twin']:.4f}) ({metrics['epoch_seconds']:.0f}s, {metrics['step_seconds']:.2f}s/step)",
                flush=True,
            )
        weights = {
            "abnormal_to_normal": harness.unwrap(nets.to_normal).state_dict(),
            "normal_to_abnormal": harness.unwrap(nets.to_abnormal).state_dict(),
        }
        harness.save_checkpoint(weights, epoch + 1, metrics)


def prepare(store: ArtifactStore, config: MatchingPairsTrainConfig) -> harness.Prepared[MatchingPairsTrainConfig]:
    """The dataset must exist (NotFound before Ray starts)."""
    read_phantom_manifest(store, config.dataset)
    return harness.Prepared(config)


def card(run: harness.Trained[MatchingPairsTrainConfig]) -> str:
    """What the published translator is and how well it found the lesions it was never shown."""
    config, metrics = run.config, run.metrics
    return (
        f"# Matching-pair translator (CycleGAN)\n\nUnpaired CycleGAN (Zhu et al. 2017, LSGAN, cycle "
        f"weight {config.lambda_cycle}, identity weight {config.lambda_identity}) between abnormal and "
        f"normal phantom CXRs of different people, guided by a max-pooled disease critic (weight "
        f"{config.lambda_disease}) trained on the image labels; residual ResNet generators "
        f"({_SIGNS[config.model.residual_sign]}), {config.model.channels} channels, {config.model.n_res_blocks} residual blocks, "
        f"{config.model.input_size}px; weights hold both directions.\nTrained on `{config.dataset}`/train for {config.epochs} "
        f"epochs with {config.workers} Ray Train worker(s), never shown a true twin. Best epoch {run.best_epoch} by "
        f"{SCORE} on `{config.dataset}`/val (label-free: the critic calls {metrics.get('val_critic_normal_rate', float('nan')):.2f} "
        f"of the abnormal images' twins normal; {metrics.get('val_healthy_change_share', float('nan')):.2f} of the change "
        f"also hits healthy images). Checked, not chosen, against the true twins: residual in lesion "
        f"{metrics.get('val_residual_in_lesion', float('nan')):.3f}, residual AUROC {metrics.get('val_residual_auroc', float('nan')):.3f}, "
        f"L1 to the true twin {metrics.get('val_l1_to_twin', float('nan')):.4f} (input {metrics.get('val_l1_input_to_twin', float('nan')):.4f}).\n"
        f"Phantoms only: not validated on real radiographs.\n"
    )


SPEC = harness.TrainSpec(
    name=MODEL_NAME,
    help="CycleGAN abnormal<->normal translator, then its pseudo-pairs",
    config_class=MatchingPairsTrainConfig,
    score=SCORE,
    loop=train_loop,
    prepare=prepare,
    card=card,
)


def train_matching_pairs(settings: Settings, config: MatchingPairsTrainConfig) -> ModelVersion:
    """Train on Ray and publish the best checkpoint as the next `matching-pairs` version."""
    return harness.train_and_publish(SPEC, settings, config)

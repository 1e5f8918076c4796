"""Adversarial fine-tuning of the decoder: the GAN losses, the gradient penalty and the discriminator's side of a step.

Owns ``Adversary``, which Training's loop consults on every batch (``--gan patchgan|wgan-gp``):
  * it trains the discriminator (DiscriminatorLayers) on real (L, ab) against the generator's
    decoded ab, detached: pix2pix's vanilla or least-squares loss with D's loss halved, or the
    Wasserstein loss with a gradient penalty (lambda_gp, n_critic);
  * following DeOldify's NoGAN, the first ``pretrain_steps`` steps train D alone on a trained generator;
  * after that, every ``n_critic``-th batch the generator's loss becomes its per-pixel loss plus
    ``lambda_adv`` x the adversarial term (a classification generator is judged on its annealed
    mean, which is differentiable);
  * with the PatchGAN it stops the run with ``DiscriminatorCollapse`` (a ValueError) when D's loss stays
    near 0 (a WGAN-GP critic's loss is not a probability's log: near 0 says nothing there);
  * its state (D, D's optimizer, counters, config) goes into the checkpoint, so --resume continues
    a GAN run; release exports leave it out.
D is wrapped in its own DistributedDataParallel when there are several processes. Its update is one
forward on real, generated and (WGAN-GP) interpolated samples together, so DDP sees one forward per
backward; the generator's term calls the unwrapped D, whose weights do not change in that step.

Usage:
    adversary = Adversary(GanConfig(kind="wgan-gp"), cfg, bins, dist)
    # in the loop, after pred = forward(L):  loss, update_g = adversary.step(L, ab, pred, pixel_loss)
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from DiscriminatorLayers import build_discriminator
from Distributed import DistContext
from ModelIO import amp_dtype, autocast, decode_prediction, known_fields, require_keys
from References import GAN_LOSSES, GANS, GanConfig, ModelConfig

STATE_FORMAT = 1
STATE_KEYS = ("config", "discriminator", "optimizer", "d_steps", "low_streak")  # what a resume reads


class DiscriminatorCollapse(ValueError):
    """D's loss stayed near 0: it no longer gives the generator a useful signal."""


class GANLoss(nn.Module):
    """pix2pix's GANLoss: ``loss(logits, target_is_real) -> float32 scalar``.

    vanilla: binary cross-entropy on the logits; lsgan: mean squared error against 1 (real) or 0 (fake).
    """

    def __init__(self, mode: str = "vanilla") -> None:
        super().__init__()
        if mode not in GAN_LOSSES:
            raise ValueError(f"unknown --gan-loss {mode!r}; choose from {GAN_LOSSES}")
        self.mode = mode

    def forward(self, logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        logits = logits.float()
        target = torch.full_like(logits, 1.0 if target_is_real else 0.0)
        if self.mode == "lsgan":
            return F.mse_loss(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target)


def image_scores(critic: nn.Module, L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """One score per image, (B,): the mean of the critic's patch scores."""
    return critic(L, ab).float().flatten(1).mean(dim=1)


def critic_terms(critic: nn.Module, L: torch.Tensor, real: torch.Tensor,
                 fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(real scores (B,), fake scores (B,), gradient penalty) from one float32 forward of ``critic``.

    The penalty (Gulrajani et al. 2017) is mean((||d score / d x||_2 - 1)^2) at x drawn uniformly
    on the segment between each real and generated ab (L, the condition, is shared). It runs with
    autocast off: under bf16 the double backward loses the precision the penalty measures.
    ``create_graph`` keeps the penalty differentiable for the critic's update.
    """
    with torch.autocast(L.device.type, enabled=False):
        L, real, fake = L.float(), real.float(), fake.float().detach()
        eps = torch.rand(len(real), 1, 1, 1, device=real.device)
        mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
        scores = image_scores(critic, torch.cat((L, L, L)), torch.cat((real, fake, mixed)))
        s_real, s_fake, s_mixed = scores.chunk(3)
        grad, = torch.autograd.grad(s_mixed.sum(), mixed, create_graph=True)
        penalty = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    return s_real, s_fake, penalty


def gradient_penalty(critic: nn.Module, L: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The WGAN-GP penalty alone (float32 scalar); see ``critic_terms``."""
    return critic_terms(critic, L, real, fake)[2]


def optimizer_betas(kind: str) -> tuple[float, float]:
    """Adam betas of the references: (0, 0.9) for WGAN-GP (Gulrajani et al.), (0.5, 0.999) for pix2pix."""
    return (0.0, 0.9) if kind == "wgan-gp" else (0.5, 0.999)


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


class Adversary:
    """The discriminator, its optimizer and the schedule of a GAN run (see the module docstring)."""

    def __init__(self, gcfg: GanConfig, cfg: ModelConfig, bins: torch.Tensor | None, dist: DistContext,
                 state: dict | None = None) -> None:
        if gcfg.kind not in GANS[1:]:
            raise ValueError(f"unknown --gan {gcfg.kind!r}; choose from {GANS[1:]}")
        self.gcfg, self.cfg, self.bins, self.device = gcfg, cfg, bins, dist.device
        self.D = build_discriminator(gcfg.kind, gcfg.d_width).to(self.device)
        self.optimizer = torch.optim.Adam(self.D.parameters(), lr=gcfg.d_lr, betas=optimizer_betas(gcfg.kind))
        self.d_steps, self.low_streak = 0, 0
        if state is not None:
            self.D.load_state_dict(state["discriminator"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.d_steps, self.low_streak = int(state["d_steps"]), int(state["low_streak"])
        self.wrapped: nn.Module = self.D
        if dist.enabled:
            self.wrapped = nn.parallel.DistributedDataParallel(
                self.D, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.gan_loss = GANLoss(gcfg.gan_loss)
        self.reset_stats()

    # ------------------------------------------------------------------ the schedule
    def generator_turn(self) -> bool:
        """Whether this batch updates the generator: never during D's pretraining, then every n_critic-th."""
        past = self.d_steps - self.gcfg.pretrain_steps
        return past >= 0 and past % max(self.gcfg.n_critic, 1) == 0

    def set_lr_scale(self, scale: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.gcfg.d_lr * scale

    # ------------------------------------------------------------------ one batch
    def d_autocast(self):
        """bf16 autocast for the PatchGAN where the generator uses it; float32 where the generator uses fp16,
        since D's update has no loss scaler of its own."""
        bf16 = amp_dtype(self.device) == torch.bfloat16
        return autocast(self.device) if bf16 else torch.autocast(self.device.type, enabled=False)

    def step(self, L: torch.Tensor, ab: torch.Tensor, pred: torch.Tensor,
             pixel_loss: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Update D on this batch; return (the generator's loss, whether the generator updates now).

        L (B, 1, H, W) and ab (B, 2, H, W) in [-1, 1]; ``pred`` the generator's raw output;
        ``pixel_loss`` its per-pixel loss. Raises DiscriminatorCollapse (see ``check_collapse``).
        """
        update_g = self.generator_turn()
        fake = decode_prediction(pred, self.cfg, self.bins, size=ab.shape[-2:])  # differentiable
        d_loss = self.discriminator_step(L, ab, fake.detach())
        self.check_collapse(d_loss)
        self.d_steps += 1
        if not update_g:
            return pixel_loss, False
        adv = self.generator_term(L, fake)
        self.sums["g_adv"] += adv.item()
        self.sums["g_steps"] += 1
        return pixel_loss + self.gcfg.lambda_adv * adv, True

    def discriminator_step(self, L: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> float:
        """One optimizer step of D on real against generated ab (both (B, 2, H, W)); returns D's loss."""
        self.D.train()
        if self.gcfg.kind == "wgan-gp":
            s_real, s_fake, penalty = critic_terms(self.wrapped, L, real, fake)
            wasserstein = s_real.mean() - s_fake.mean()
            loss = -wasserstein + self.gcfg.lambda_gp * penalty
            self.sums["wasserstein"] += wasserstein.item()
            self.sums["gp"] += penalty.item()
        else:
            with self.d_autocast():
                logits = self.wrapped(torch.cat((L, L)), torch.cat((real, fake)))
            l_real, l_fake = logits.chunk(2)
            loss = 0.5 * (self.gan_loss(l_real, True) + self.gan_loss(l_fake, False))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"discriminator loss is {loss.item()}; stopping (last.pt is from before)")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.sums["d_loss"] += loss.item()
        self.sums["d_steps"] += 1
        return loss.item()

    def generator_term(self, L: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """The adversarial term for the generator: the non-saturating GAN loss, or -critic score.

        Calls the unwrapped D with its weights frozen: only the generator learns from this term.
        """
        set_requires_grad(self.D, False)
        try:
            if self.gcfg.kind == "wgan-gp":
                with torch.autocast(L.device.type, enabled=False):
                    return -image_scores(self.D, L.float(), fake.float()).mean()
            with self.d_autocast():
                return self.gan_loss(self.D(L, fake), True)
        finally:
            set_requires_grad(self.D, True)

    def check_collapse(self, d_loss: float) -> None:
        """PatchGAN: raise DiscriminatorCollapse after ``collapse_steps`` steps in a row with |D's loss| below
        ``collapse_loss``. A no-op for WGAN-GP, whose critic loss (minus the Wasserstein estimate plus the
        penalty) is unbounded and crosses 0 in normal training."""
        if self.gcfg.kind != "patchgan":
            return
        self.low_streak = self.low_streak + 1 if abs(d_loss) < self.gcfg.collapse_loss else 0
        if self.gcfg.collapse_steps and self.low_streak >= self.gcfg.collapse_steps:
            raise DiscriminatorCollapse(
                f"the discriminator collapsed: its loss stayed below {self.gcfg.collapse_loss:g} for "
                f"{self.low_streak} steps in a row, so it no longer teaches the generator anything. Lower --d-lr "
                f"(now {self.gcfg.d_lr:g}) or --gan-pretrain-steps, raise --lambda-adv, or try --gan-loss lsgan / "
                "--gan wgan-gp; last.pt holds the run as it was at the last epoch end")

    # ------------------------------------------------------------------ bookkeeping
    def reset_stats(self) -> None:
        self.sums = {"d_loss": 0.0, "d_steps": 0, "g_adv": 0.0, "g_steps": 0, "wasserstein": 0.0, "gp": 0.0}

    def epoch_stats(self, reduce=None) -> dict:
        """Means since ``reset_stats``: D's loss, the adversarial term, and for WGAN-GP the Wasserstein
        estimate (mean critic score of real minus generated) and the penalty. ``reduce`` (e.g.
        DistContext.all_reduce_sum) sums the counts of all processes first."""
        keys = list(self.sums)
        totals = torch.tensor([float(self.sums[k]) for k in keys], dtype=torch.float64)
        if reduce is not None:
            totals = reduce(totals)
        s = dict(zip(keys, totals.tolist()))
        n = max(s["d_steps"], 1)
        out = {"d_loss": s["d_loss"] / n, "g_adv": s["g_adv"] / max(s["g_steps"], 1),
               "d_steps": int(s["d_steps"]), "g_adv_steps": int(s["g_steps"])}
        if self.gcfg.kind == "wgan-gp":
            out.update(wasserstein=s["wasserstein"] / n, gp=s["gp"] / n)
        return out

    def state_dict(self) -> dict:
        """What a checkpoint needs to continue: D, its optimizer, the counters and the config."""
        return {"format": STATE_FORMAT, "discriminator": {k: v.detach().cpu() for k, v in self.D.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "d_steps": self.d_steps, "low_streak": self.low_streak,
                "config": dataclasses.asdict(self.gcfg)}


def gan_config_from_dict(d: dict) -> GanConfig:
    return GanConfig(**known_fields(GanConfig, d))


def gan_settings(gcfg: GanConfig, ckpt: dict | None, plan: dict) -> tuple[GanConfig, dict | None]:
    """(the GAN settings, the discriminator's saved state or None): a resumed run keeps its own."""
    if ckpt is None:
        return gcfg, None
    if "gan" in ckpt:
        require_keys(ckpt, tuple(f"gan.{k}" for k in STATE_KEYS), plan["checkpoint"], "GAN checkpoint")
        return gan_config_from_dict(ckpt["gan"]["config"]), ckpt["gan"]
    if gcfg.kind != "none":
        raise ValueError(f"{plan['checkpoint']}: not a GAN run, so --resume cannot add --gan {gcfg.kind}; start a "
                         f"new run from it with --init-from {plan['checkpoint']}")
    return gcfg, None


def gan_summary(record: dict) -> str:
    """The epoch line's GAN figures ("" for a plain run)."""
    if "d_loss" not in record:
        return ""
    w = f"  W {record['wasserstein']:.3f}" if "wasserstein" in record else ""
    return f"D {record['d_loss']:.4f}  G adv {record['g_adv']:.4f}{w}  "

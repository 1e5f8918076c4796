"""The training engine: one loop for a CPU, a GPU, or many GPUs under torchrun.

Owns the decoder's optimisation: the loss functions, ``train_one_epoch``, ``validate``, the learning-rate
schedule (linear warm-up by step, cosine decay by epoch; both stateless, so a resumed run continues on the
same curve), and ``fit``, which runs epochs with resumable checkpoints and treats SIGTERM (docker stop,
systemd) like Ctrl-C, so no write is left half done. What a run is set up with (files, colour prior, model,
optimiser, validation data) is TrainingSetup.py's. The loop works on an explicit trainable part (the
decoder, wrapped in DistributedDataParallel when there are several processes); the frozen encoder stays
outside DDP. Only the main process prints and writes (RunFolder, checkpoints).

Data order is a permutation seeded by (seed, epoch) and each item's augmentation is seeded
by (seed, epoch, index) (LoadData), so a run resumes mid-epoch, on any number of processes,
with the same data it would have seen.

Usage:
    with Distributed.process_group("auto") as dist:
        fit(paths, cfg, tcfg, dist, run_name="my_run")
"""
from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

import Quantization
from Adversarial import Adversary, gan_settings, gan_summary, optimizer_betas
from DecoderLayers import Hints
from Distributed import DistContext
from ImageIO import sigterm_as_interrupt
from LoadData import ColorizationDataset, EpochSampler, make_loader
from HintSampling import GuidedDataset
from ModelIO import autocast, decode_prediction, save_checkpoint
from References import LAB, LOSSES, VERSION, GanConfig, ModelConfig, Paths, TrainConfig
from RunFolder import RunFolder, sample_grid
from TrainingSetup import (data_rate, freeze_base, load_or_build, make_optimizer, prepare_run, validation_data,
                           wrap_trainable)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_loss_fn(cfg: ModelConfig, tcfg: TrainConfig, bins: torch.Tensor | None, weights: torch.Tensor | None):
    """The per-pixel ab loss, ``loss(pred, ab_target) -> scalar``.

    classification (default): rebalanced soft cross-entropy over ab bins (see Quantization).
    huber: L2 near the target and L1 beyond ``huber_delta``; it is robust to the many
    plausible colours of an object, so it averages towards grey less than MSE.
    l1 / mse: the plain alternatives.
    """
    if cfg.loss == "classification":
        return lambda pred, ab: Quantization.classification_loss(pred, ab, bins, weights)
    if cfg.loss == "huber":
        return lambda pred, ab: F.smooth_l1_loss(pred.float(), ab, beta=tcfg.huber_delta)
    if cfg.loss == "l1":
        return lambda pred, ab: F.l1_loss(pred.float(), ab)
    if cfg.loss == "mse":
        return lambda pred, ab: F.mse_loss(pred.float(), ab)
    raise ValueError(f"unknown loss {cfg.loss!r}; choose from {LOSSES}")


def lr_at(epoch: int, tcfg: TrainConfig, step: int | None = None) -> float:
    """The learning rate of ``epoch`` (cosine decay from ``tcfg.lr``) for the optimizer step after ``step``
    steps of the run (linear warm-up over the first ``tcfg.warmup_steps``; None: no warm-up factor).

    Stateless: a run resumed from a checkpoint (which holds the epoch and the step count) follows
    the curve the uninterrupted run would have.
    """
    lr = tcfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / tcfg.epochs))
    if step is not None and tcfg.warmup_steps > 0:
        lr *= min(1.0, (step + 1) / tcfg.warmup_steps)
    return lr


def train_one_epoch(forward: nn.Module, trainable: nn.Module, loader, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, loss_fn, device: torch.device, epoch: int, grad_clip: float,
                    on_step=None, show: bool = True, adversary: Adversary | None = None) -> dict:
    """One pass over ``loader``, updating ``trainable`` (the decoder, or its DDP wrapper).

    ``forward(L)`` is the whole model (L (B, 1, S, S) in [-1, 1] -> prediction); ``on_step()``
    runs after each batch and returns True to stop early. With an ``adversary`` (a GAN run) each
    batch also updates the discriminator, and the generator updates only on its turns, with the
    adversarial term added ("train_loss" stays the per-pixel loss). Returns {"train_loss",
    "images", "skipped", "seconds", "data_seconds", "steps", "stopped"} for this process.
    Raises FloatingPointError on a NaN/inf loss, so a diverged run stops instead of
    overwriting good checkpoints.
    """
    trainable.train()
    total, n, skipped, steps, waited, stopped = 0.0, 0, 0, 0, 0.0, False
    t0 = tick = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch} train", unit="batch", leave=False, disable=not show)
    for batch in bar:
        waited += time.perf_counter() - tick
        skipped += batch["skipped"]
        if "L" not in batch:
            tick = time.perf_counter()
            continue
        L, ab = batch["L"].to(device, non_blocking=True), batch["ab"].to(device, non_blocking=True)
        if device.type == "cuda":
            L = L.contiguous(memory_format=torch.channels_last)
        hints = batch_hints(batch, device)
        update = adversary is None or adversary.generator_turn()
        with torch.set_grad_enabled(update), autocast(device):
            pred = forward(L, hints)
            pixel_loss = loss = loss_fn(pred, ab)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"epoch {epoch}: loss is {loss.item()}; stopping (last.pt is from before)")
        if adversary is not None:
            loss, update = adversary.step(L, ab, pred, pixel_loss)
        if update:
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(trainable.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
        total += pixel_loss.item() * len(L)
        n += len(L)
        steps += 1
        bar.set_postfix(loss=f"{total / n:.4f}")
        if on_step is not None and on_step():
            stopped = True
            break
        tick = time.perf_counter()
    return {"train_loss": total / max(n, 1), "loss_sum": total, "images": n, "skipped": skipped, "steps": steps,
            "seconds": time.perf_counter() - t0, "data_seconds": waited, "stopped": stopped}


def batch_hints(batch: dict, device: torch.device) -> Hints | None:
    """A guided run's simulated hints for the model (GuidedDataset), or None."""
    if "hints" not in batch:
        return None
    return Hints(batch["hints"].to(device, non_blocking=True), batch["global_hint"].to(device, non_blocking=True))


@torch.no_grad()
def validate(model: nn.Module, loader, loss_fn, cfg: ModelConfig, bins: torch.Tensor | None,
             device: torch.device, dist: DistContext) -> dict:
    """Validation loss plus the decoded prediction's mean |ab error| in Lab units (comparable across losses).

    Each process scores its share (``loader`` may be None for an empty share); the sums are
    all-reduced, so the figures equal one process's on the whole set. Returns {"val_loss",
    "val_ab_mae", "images", "skipped"}.
    """
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # loss * n, ab error * n, n, skipped
    for batch in tqdm(loader or [], desc="validate", unit="batch", leave=False, disable=not dist.is_main):
        sums[3] += batch["skipped"]
        if "L" not in batch:
            continue
        L, ab = batch["L"].to(device), batch["ab"].to(device)
        with autocast(device):
            pred = model(L, batch_hints(batch, device))
        ab_pred = decode_prediction(pred, cfg, bins, size=ab.shape[-2:])
        sums[0] += loss_fn(pred, ab).item() * len(L)
        sums[1] += (ab_pred - ab).abs().mean(dim=(1, 2, 3)).sum().item() * LAB.ab_scale
        sums[2] += len(L)
    loss, mae, n, skipped = dist.all_reduce_sum(sums).tolist()
    return {"val_loss": loss / max(n, 1), "val_ab_mae": mae / max(n, 1), "images": int(n), "skipped": int(skipped)}


def fit(paths: Paths, cfg: ModelConfig, tcfg: TrainConfig, dist: DistContext, run_name: str | None = None,
        resume: Path | None = None, gcfg: GanConfig = GanConfig()) -> int:
    """Train the decoder; the main process writes metrics.jsonl, loss.png, samples/, last.pt and best.pt.

    ``tcfg.batch_size`` is per process: the global batch is ``batch_size * world_size``. With
    ``gcfg.kind`` other than "none" the decoder is trained against a discriminator (Adversarial);
    a resumed GAN run continues with the GAN settings stored in its checkpoint. SIGTERM raises
    KeyboardInterrupt, as Ctrl-C does; a full disk raises ImageIO.DiskFullError (an OSError).
    """
    with sigterm_as_interrupt():
        return _fit(paths, cfg, tcfg, dist, run_name, resume, gcfg)


def _fit(paths: Paths, cfg: ModelConfig, tcfg: TrainConfig, dist: DistContext, run_name: str | None,
         resume: Path | None, gcfg: GanConfig) -> int:
    device, say = dist.device, (tqdm.write if dist.is_main else (lambda *_: None))
    seed_everything(tcfg.seed)
    plan = prepare_run(paths, tcfg, run_name, resume, dist)
    run = RunFolder(Path(plan["run_dir"]), write=dist.is_main)
    stale = run.remove_stale_temps()
    if stale:
        say(f"removed {len(stale)} temporary file(s) an interrupted run left in {run.path}: "
            f"{', '.join(f.name for f in stale[:3])}{' ...' if len(stale) > 3 else ''}")
    train_files, val_files = [Path(f) for f in plan["train"]], [Path(f) for f in plan["val"]]
    model, cfg, extras, progress, ckpt = load_or_build(plan, paths, cfg, tcfg, dist, train_files)
    if ckpt is not None:
        run.resume_log(progress.epoch)  # one record per finished epoch, whatever a killed run left
    bins = extras.get("ab_bins")
    weights = Quantization.class_weights(extras["ab_prior"], tcfg.rebalance) if bins is not None else None
    bins = bins.to(device) if bins is not None else None
    loss_fn = make_loss_fn(cfg, tcfg, bins, weights)
    if cfg.guided and tcfg.hint_layers_only:
        freeze_base(model.decoder)  # before the optimizer and DDP, which take only what trains
    trainable, forward = wrap_trainable(model, tcfg, dist)
    gcfg, gan_state = gan_settings(gcfg, ckpt, plan)
    gan = gcfg.kind != "none"
    optimizer, scaler = make_optimizer(model, tcfg, device, ckpt, optimizer_betas(gcfg.kind) if gan else (0.9, 0.999))
    adversary = Adversary(gcfg, cfg, bins, dist, gan_state) if gan else None
    pin = device.type == "cuda"
    train_ds = ColorizationDataset(train_files, cfg.image_size, True, tcfg.crop_scale, seed=tcfg.seed)
    if cfg.guided:
        train_ds = GuidedDataset(train_ds, extras["ab_bins"], tcfg)
    sampler = EpochSampler(len(train_ds), dist.rank, dist.world_size, seed=tcfg.seed)
    val_loader, samples = validation_data(val_files, cfg, tcfg, dist)
    hinted_loader = validation_data(val_files, cfg, tcfg, dist, extras["ab_bins"])[0] if cfg.guided else None
    config = {"model": cfg, "train": tcfg, "gan": gcfg, "paths": paths, "device": str(device),
              "world_size": dist.world_size, "version": VERSION}
    n_params = sum(p.numel() for p in model.decoder.parameters() if p.requires_grad)
    rate = data_rate(train_ds) if dist.is_main else 0.0
    say(f"training on {device} x {dist.world_size} process(es): {len(train_files)} train / {len(val_files)} val "
        f"images, {cfg.image_size}px, loss {cfg.loss}, {n_params / 1e6:.2f}M trainable parameters, global batch "
        f"{tcfg.batch_size * dist.world_size}, run folder {run.path}")
    if adversary is not None:
        say(f"adversarial: {gcfg.kind} ({gcfg.gan_loss + ' loss, ' if gcfg.kind == 'patchgan' else ''}lambda_adv "
            f"{gcfg.lambda_adv:g}, D {sum(p.numel() for p in adversary.D.parameters()) / 1e6:.2f}M parameters, "
            f"D lr {gcfg.d_lr:g}, D alone for the first {gcfg.pretrain_steps} steps"
            f"{f', lambda_gp {gcfg.lambda_gp:g}, n_critic {gcfg.n_critic}' if gcfg.kind == 'wgan-gp' else ''})")
    say(f"data: decode + augment {rate:.1f} images/s per loader worker, {tcfg.workers} worker(s) per process")

    def checkpoint(name: str) -> None:
        if dist.is_main:
            save_checkpoint(run.path / name, model, cfg, optimizer=optimizer, scaler=scaler, epoch=progress.epoch - 1,
                            best_metric=progress.best, config=config, extras=extras,
                            progress=progress.as_dict(tcfg, dist),
                            gan=adversary.state_dict() if adversary is not None else None)

    start_samples = progress.samples_done
    steps_this_epoch, used_lr = 0, 0.0

    def set_lr(epoch: int) -> None:  # for the next optimizer step
        for group in optimizer.param_groups:
            group["lr"] = lr_at(epoch, tcfg, progress.global_step) * group.get("lr_scale", 1.0)

    def on_step() -> bool:
        nonlocal steps_this_epoch, used_lr
        steps_this_epoch += 1
        progress.global_step += 1
        used_lr = optimizer.param_groups[0]["lr"]  # by the step just taken (logged with the epoch)
        set_lr(train_ds.epoch)
        progress.samples_done = min(len(train_ds), start_samples + steps_this_epoch * tcfg.batch_size * dist.world_size)
        if tcfg.save_every_steps and progress.global_step % tcfg.save_every_steps == 0:
            checkpoint("last.pt")
        return bool(tcfg.max_steps) and progress.global_step >= tcfg.max_steps

    for epoch in range(progress.epoch, tcfg.epochs):
        if tcfg.max_steps and progress.global_step >= tcfg.max_steps:
            break
        set_lr(epoch)
        if adversary is not None:
            adversary.set_lr_scale(lr_at(epoch, tcfg) / tcfg.lr)
            adversary.reset_stats()
        train_ds.epoch, start_samples, steps_this_epoch = epoch, progress.samples_done, 0
        sampler.set_epoch(epoch, skip=progress.samples_done)
        loader = make_loader(train_ds, tcfg.batch_size, shuffle=False, workers=tcfg.workers, pin_memory=pin,
                             sampler=sampler, persistent=False)
        tr = train_one_epoch(forward, trainable, loader, optimizer, scaler, loss_fn, device, epoch, tcfg.grad_clip,
                             on_step=on_step, show=dist.is_main, adversary=adversary)
        if tr["stopped"] and progress.samples_done < len(train_ds):
            checkpoint("last.pt")
            say(f"stopped at --max-steps {tcfg.max_steps} in epoch {epoch} ({progress.samples_done}/{len(train_ds)} "
                f"images); continue with --resume {run.path}")
            return 0
        totals = dist.all_reduce_sum(torch.tensor([tr["loss_sum"], tr["images"], tr["skipped"]], dtype=torch.float64))
        # Validation and samples run on the unwrapped model: DDP's forward is a collective, and the
        # processes hold different numbers of validation batches (and only rank 0 draws samples).
        ev = validate(model, val_loader, loss_fn, cfg, bins, device, dist)
        hinted = validate(model, hinted_loader, loss_fn, cfg, bins, device, dist) if cfg.guided else None
        record = {"epoch": epoch, "lr": used_lr, "train_loss": float(totals[0] / max(totals[1], 1)),
                  "images": int(totals[1]), "skipped": int(totals[2]), "seconds": tr["seconds"],
                  "data_seconds": tr["data_seconds"], "global_step": progress.global_step,
                  "val_loss": ev["val_loss"], "val_ab_mae": ev["val_ab_mae"], "val_skipped": ev["skipped"]}
        if hinted is not None:
            record.update(val_hinted_loss=hinted["val_loss"], val_hinted_ab_mae=hinted["val_ab_mae"])
        if adversary is not None:
            record.update(adversary.epoch_stats(dist.all_reduce_sum))
        run.append_metrics(record)
        if dist.is_main:
            run.save_samples(epoch, sample_grid(model, samples, cfg, bins, device))
        # a guided model is judged with and without hints alike
        metric = ev["val_loss"] if hinted is None else (ev["val_loss"] + hinted["val_loss"]) / 2
        is_best = metric < progress.best
        progress.best = min(progress.best, metric)
        progress.epoch, progress.samples_done = epoch + 1, 0
        if is_best:  # before last.pt: a run killed in between redoes the epoch and rewrites best.pt
            checkpoint("best.pt")
        checkpoint("last.pt")
        wait = tr["data_seconds"] / max(tr["seconds"], 1e-9)
        with_hints = f"with hints {hinted['val_ab_mae']:.2f}  " if hinted else ""
        say(f"epoch {epoch}: train {record['train_loss']:.4f}  val {ev['val_loss']:.4f}  "
            f"val |ab err| {ev['val_ab_mae']:.2f}  {with_hints}{gan_summary(record)}{tr['seconds']:.0f}s ({100 * wait:.0f}% waiting for data"
            f"{': input-bound, add --workers' if wait > 0.3 else ''})  skipped {record['skipped'] + ev['skipped']}"
            f"{'  *best*' if is_best else ''}")
    say(f"done: best val loss {progress.best:.4f}; checkpoints in {run.path}")
    return 0

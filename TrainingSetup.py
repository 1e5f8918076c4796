"""Setting up a training run: its files, colour prior, run folder, model, what trains, optimiser and validation data.

Owns what ``Training.fit`` does before its first step, and again on a resume: ``split_files`` (training and
validation photos, a seeded split when there is no --val-dir), ``class_prior`` (the ab colour prior for class
rebalancing, counted once and cached in the run folder), ``prepare_run`` (a new run folder, or the checkpoint to
resume, decided on the main process and shared), ``load_or_build`` (the model from scratch, from --init-from, or
from a checkpoint with its ``Progress``), ``wrap_trainable`` (only the decoder under DistributedDataParallel; the
frozen encoder stays outside), ``make_optimizer`` (AdamW, no decay on biases and norm weights, the hint layers at
their own learning rate, ``param_groups``), ``validation_data``, and ``data_rate`` (how fast the loaders deliver).

Usage:
    plan = prepare_run(paths, tcfg, "my_run", None, dist)
    model, cfg, extras, progress, ckpt = load_or_build(plan, paths, cfg, tcfg, dist, train_files)
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

import Quantization
from DecoderLayers import ColorizationModel
from Distributed import DistContext
from HintSampling import HINT_LAYERS, GuidedDataset
from LoadData import ColorizationDataset, collate_skip, find_images, make_loader
from ModelIO import RESUME_KEYS, amp_dtype, build_model, load_checkpoint, load_generator, require_keys
from References import ModelConfig, Paths, TrainConfig
from RunFolder import RunFolder


@dataclass
class Progress:
    """Where a run stands: the next epoch to train, how much of it is done, and the totals."""

    epoch: int = 0
    samples_done: int = 0  # of ``epoch``, by all processes together
    global_step: int = 0
    best: float = math.inf

    def as_dict(self, tcfg: TrainConfig, dist: DistContext) -> dict:
        return {"epoch": self.epoch, "samples_done": self.samples_done, "global_step": self.global_step,
                "seed": tcfg.seed, "world_size": dist.world_size, "batch_size": tcfg.batch_size}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "Progress":
        p = ckpt.get("progress") or {}
        return cls(int(p.get("epoch", ckpt["epoch"] + 1)), int(p.get("samples_done", 0)),
                   int(p.get("global_step", 0)), float(ckpt["best_metric"]))


def split_files(paths: Paths, tcfg: TrainConfig) -> tuple[list[Path], list[Path]]:
    """Training and validation files; without a val folder, a seeded 10% of the training folder."""
    files = find_images(paths.data_dir)
    if paths.val_dir is not None:
        val = find_images(paths.val_dir)
    else:
        if len(files) < 2:
            raise ValueError(f"{paths.data_dir}: need at least 2 images to split off validation (or pass --val-dir)")
        shuffled = files[:]
        random.Random(tcfg.seed).shuffle(shuffled)
        n_val = max(1, len(files) // 10)
        val, files = sorted(shuffled[:n_val]), sorted(shuffled[n_val:])
    if tcfg.max_train_images:
        files = files[: tcfg.max_train_images]
    return files, val


def class_prior(files: list[Path], cfg: ModelConfig, tcfg: TrainConfig, dist: DistContext) -> dict:
    """ab bins and their empirical prior over the (un-augmented) training images.

    Each process counts its share of the files and the counts are summed, so the prior equals
    what one process computes on all of them.
    """
    bins = Quantization.ab_bins(cfg.ab_grid)
    mine = files[dist.rank::dist.world_size]
    counts = torch.zeros(len(bins), dtype=torch.float64)
    if mine:
        loader = make_loader(ColorizationDataset(mine, cfg.image_size, train=False), tcfg.batch_size,
                             shuffle=False, workers=tcfg.workers, persistent=False)
        batches = (b["ab"][:, :, ::4, ::4] for b in tqdm(loader, desc="colour prior", unit="batch", leave=False,
                                                         disable=not dist.is_main) if "ab" in b)
        counts = Quantization.bin_counts(batches, bins)
    counts = dist.all_reduce_sum(counts)
    return {"ab_bins": bins, "ab_prior": Quantization.prior_from_counts(counts, bins)}


def prepare_run(paths: Paths, tcfg: TrainConfig, run_name: str | None, resume: Path | None,
                dist: DistContext) -> dict:
    """Rank 0 decides the run folder and lists the files once (cached in files.json); every rank gets the result.

    Returns {"run_dir", "checkpoint" (to resume from, or None), "train", "val"}. Errors (a run
    that already exists, an empty folder) are raised on every rank, with the same message.
    """
    result: dict | str = {}
    if dist.is_main:
        try:
            result = _prepare_on_main(paths, tcfg, run_name, resume)
        except (FileNotFoundError, ValueError) as e:
            result = str(e)
    result = dist.share(result)
    if isinstance(result, str):
        raise ValueError(result)
    return result


def _prepare_on_main(paths: Paths, tcfg: TrainConfig, run_name: str | None, resume: Path | None) -> dict:
    if resume is not None:
        checkpoint = resume / "last.pt" if resume.is_dir() else resume
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint}: nothing to resume (no such checkpoint)")
        run_dir = checkpoint.parent
    else:
        checkpoint, run_dir = None, paths.runs_dir / (run_name or time.strftime("%Y%m%d-%H%M%S"))
        if (run_dir / "last.pt").exists():  # never overwrite an earlier run's checkpoints
            raise ValueError(f"{run_dir} already holds a run: continue it with --resume {run_dir}, "
                             "or choose another --run-name")
    run = RunFolder(run_dir)
    listing = run.load_listing() if checkpoint is not None else None
    if listing is None:
        train, val = split_files(paths, tcfg)
        listing = {"train": [str(f) for f in train], "val": [str(f) for f in val]}
        run.save_listing(listing)
    return {"run_dir": str(run_dir), "checkpoint": None if checkpoint is None else str(checkpoint), **listing}


def data_rate(ds: ColorizationDataset, items: int = 24) -> float:
    """Decode + augment throughput of one loader worker, in images/s (measured in this process)."""
    t = time.perf_counter()
    n = min(items, len(ds))
    for i in range(n):
        ds[i]
    return n / max(time.perf_counter() - t, 1e-9)


def load_or_build(plan: dict, paths: Paths, cfg: ModelConfig, tcfg: TrainConfig, dist: DistContext,
                  train_files: list[Path]) -> tuple[ColorizationModel, ModelConfig, dict, Progress, dict | None]:
    """The model to train: from the checkpoint being resumed, from ``tcfg.init_from`` (a trained
    generator: its config, decoder weights and colour prior), or fresh (with the colour prior).

    Returns (model on the device, its config, extras (ab bins and prior), progress, the checkpoint or None).
    """
    if plan["checkpoint"]:
        model, ckpt = load_checkpoint(plan["checkpoint"], dist.device)
        require_keys(ckpt, RESUME_KEYS, plan["checkpoint"], "training checkpoint")
        if ckpt["model_config"].members > 1:
            raise ValueError(f"{plan['checkpoint']}: an ensemble of {ckpt['model_config'].members} decoders "
                             "assembled for release cannot be trained on; resume one of the runs it was made from, "
                             "or start a new run from one member with --init-from FILE --init-member N")
        if ckpt["model_config"].refiner_width:
            raise ValueError(f"{plan['checkpoint']}: a hint refiner's run (--refiner) cannot be resumed; start a new "
                             "one with --refiner N --init-from this file, which goes on training its refiner")
        return model, ckpt["model_config"], ckpt["extras"], Progress.from_checkpoint(ckpt), ckpt
    if tcfg.init_from:
        model, source, note = load_generator(tcfg.init_from, dist.device, cfg.decoder, tcfg.init_member,
                                             cfg.guided, cfg.hint_features)
        if dist.is_main:
            tqdm.write(note)
        # the working size is the command line's: a generator may be fine-tuned at another resolution
        return model, replace(source["model_config"], image_size=cfg.image_size), source["extras"], Progress(), None
    extras = class_prior(train_files, cfg, tcfg, dist) if cfg.loss == "classification" else {}
    model = build_model(cfg, paths.backbone_weights, len(extras["ab_bins"]) if extras else None).to(dist.device)
    return model, cfg, extras, Progress(), None


def wrap_trainable(model: ColorizationModel, tcfg: TrainConfig, dist: DistContext) -> tuple[nn.Module, nn.Module]:
    """(the trainable part, the whole forward) for this setup: the decoder alone is wrapped in DDP when
    there are several processes (SyncBatchNorm on GPUs); the frozen encoder stays outside it."""
    device = dist.device
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    trainable: nn.Module = model.decoder
    if dist.enabled:
        if device.type == "cuda":  # SyncBatchNorm needs a GPU; on gloo/CPU each process keeps its own statistics
            model.decoder = trainable = nn.SyncBatchNorm.convert_sync_batchnorm(model.decoder)
        trainable = nn.parallel.DistributedDataParallel(
            model.decoder, device_ids=[device.index] if device.type == "cuda" else None)
    forward: nn.Module = ColorizationModel(model.encoder, trainable)
    return trainable, torch.compile(forward) if tcfg.compile else forward


def param_groups(module: nn.Module, weight_decay: float, decay_norms: bool, hint_lr_scale: float = 1.0) -> list[dict]:
    """AdamW's parameter groups: weight decay on the conv/linear weights (2-D and up) only, none on biases
    and norm weights (1-D), which set scales and offsets that decay would only pull towards 0. With
    ``decay_norms``, one group decaying everything (the layout of runs before issue 23). A guided decoder's
    hint layers get their own groups whose "lr_scale" is ``hint_lr_scale``: they start at zero and must
    learn from scratch what the rest only adjusts."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]  # not a frozen base
    if decay_norms:
        return [{"params": [p for _, p in named], "weight_decay": weight_decay}]
    groups = []
    for hint in (False, True):
        mine = [p for n, p in named if n.startswith(HINT_LAYERS) == hint]
        scale = {"lr_scale": hint_lr_scale} if hint else {}
        groups += [{"params": [p for p in mine if p.ndim > 1], "weight_decay": weight_decay, **scale},
                   {"params": [p for p in mine if p.ndim <= 1], "weight_decay": 0.0, **scale}]
    return [g for g in groups if g["params"]]


def make_optimizer(model: ColorizationModel, tcfg: TrainConfig, device: torch.device, ckpt: dict | None,
                   betas: tuple[float, float] = (0.9, 0.999)) -> tuple[torch.optim.Optimizer, torch.amp.GradScaler]:
    """AdamW over the decoder and the loss scaler (enabled only for fp16), restored from ``ckpt`` if given.

    A resumed run keeps the group layout its checkpoint was saved with (one group: everything decayed).
    """
    saved = ckpt["optimizer"] if ckpt is not None else None
    decay_norms = tcfg.decay_norms if saved is None else len(saved["param_groups"]) == 1
    optimizer = torch.optim.AdamW(param_groups(model.decoder, tcfg.weight_decay, decay_norms, tcfg.hint_lr_scale), lr=tcfg.lr,
                                  weight_decay=tcfg.weight_decay, betas=betas)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)
    if ckpt is not None and ckpt["optimizer"] is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["scaler"] is not None:
            scaler.load_state_dict(ckpt["scaler"])
    return optimizer, scaler


def freeze_base(decoder: nn.Module) -> None:
    """--hint-layers-only: only the hint layers train; the rest of the decoder, BatchNorm statistics included,
    stays exactly as loaded, so automatic colour cannot change."""
    for name, p in decoder.named_parameters():
        p.requires_grad_(name.startswith(HINT_LAYERS))
    decoder.frozen_base = True


def validation_data(val_files: list[Path], cfg: ModelConfig, tcfg: TrainConfig, dist: DistContext,
                    bins: torch.Tensor | None = None):
    """(this process's validation loader, or None for an empty share; the sample batch, on rank 0 only).

    With ``bins`` (a guided run) the items carry hints: always some points, and a global hint half the time,
    seeded by the item alone, so every epoch is scored on the same hints.
    """
    mine = val_files[dist.rank::dist.world_size]
    ds = ColorizationDataset(mine, cfg.image_size, train=False) if mine else None
    if ds is not None and bins is not None:
        ds = GuidedDataset(ds, bins, replace(tcfg, hint_none=0.0, hint_global_self=0.5, hint_global_window=0.0))
    loader = make_loader(ds, tcfg.batch_size, shuffle=False,
                         workers=tcfg.workers, pin_memory=dist.device.type == "cuda") if mine else None
    samples = None
    if dist.is_main:
        ds = ColorizationDataset(val_files[: tcfg.samples] or val_files[:1], cfg.image_size, train=False)
        samples = collate_skip([ds[i] for i in range(len(ds))])
    return loader, samples

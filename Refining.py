"""Training a hint refiner (RefinerLayers.HintRefiner) on a trained guided model, which itself stays frozen.

Owns the refiner's loop and its data path, which runs on the training device so that a GPU is never starved:
every photo is decoded once into a small uint8 square (``PhotoBank``); each step draws random crops and flips
with one affine ``grid_sample``, converts them to Lab (ColourSpace, via LoadData), simulates hints
(``simulate_hints``), runs the frozen model, and trains the refiner with an L1 loss on the decoded colour at the
logits' grid. Validation uses the same hints every time (a fixed seed) and reports the frozen model's error
beside the refined one. One process (no torchrun); no resume: a run is minutes long.

The hint mix (chosen to cover the product's uses; the old decoder-only training saw Geometric(1/8) points):
  * 55 % of crops get points only, 15 % points and a reference, 30 % a reference only;
  * the number of points is log-uniform in 1..100; each is a square of 1-5 working pixels (15 %: 1-9) at a
    uniform position, coloured with its patch's mean ab, a later point over an earlier one;
  * the reference is the crop's own colours (40 %), those of a 25-60 % window of it (40 %), or another photo's.

Writes <runs>/<name>/last.pt at every validation and best.pt at the best refined validation error: complete
checkpoints of the refined model, ready for ``--mode export``.

Usage:
    python Engine.py --mode training --refiner 48 --init-from guided.pt --data-dir photos/ --epochs 100
(guided.pt: a guided model without a refiner, e.g. ``scripts/assemble_refined.py --strip weights/colorizer.pt``;
a refined model as --init-from goes on training its own refiner.)
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from DecoderLayers import ColorizationModel, Hints
from ImageIO import ImageReadError
from LoadData import load_rgb, normalize_lab, rgb_to_lab
from ModelIO import autocast, load_checkpoint, save_checkpoint
from Quantization import annealed_mean, class_weights, classification_loss
from RefinerLayers import HintRefiner, RefinedDecoder
from References import LAB, ModelConfig, Paths, TrainConfig
from RunFolder import RunFolder
from TrainingSetup import split_files

BANK_SCALE = 1.25  # photos are kept at this multiple of the working size, so a crop is resampled by 0.9-1.25x
MAX_POINTS = 100


class PhotoBank:
    """Photos as uint8 squares (N, 3, side, side) on ``device``; ``crops`` draws augmented training views."""

    def __init__(self, files: list[Path], side: int, device: torch.device) -> None:
        squares, self.skipped = [], []
        for f in tqdm(files, desc="reading photos", unit="img", leave=False):
            try:
                rgb = load_rgb(f)
            except ImageReadError as e:
                self.skipped.append(f"{e}")
                continue
            squares.append(cv2.resize((rgb * 255 + 0.5).astype(np.uint8), (side, side), interpolation=cv2.INTER_AREA))
        if not squares:
            raise ValueError(f"no readable photos among {len(files)} file(s)")
        self.images = torch.from_numpy(np.stack(squares)).permute(0, 3, 1, 2).contiguous().to(device)

    def __len__(self) -> int:
        return len(self.images)

    def crops(self, n: int, size: int, g: torch.Generator, scale: tuple[float, float] = (0.5, 1.0)) -> torch.Tensor:
        """``n`` random crops (area ``scale`` of the square, aspect 3:4-4:3, half flipped) -> RGB (n, 3, size,
        size) float in [0, 1]."""
        dev = self.images.device
        u = torch.rand(n, 5, generator=g, device=dev)
        area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
        aspect = torch.exp((u[:, 1] - 0.5) * 2 * math.log(4 / 3))
        sx, sy = (area * aspect).sqrt().clamp(max=1.0), (area / aspect).sqrt().clamp(max=1.0)
        cx, cy = (2 * u[:, 2] - 1) * (1 - sx), (2 * u[:, 3] - 1) * (1 - sy)
        flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3, device=dev)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx * flip, cx, sy, cy
        idx = torch.randint(len(self.images), (n,), generator=g, device=dev)
        grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
        return F.grid_sample(self.images[idx].float() / 255, grid, mode="bilinear", align_corners=False).clamp(0, 1)

    def whole(self, size: int) -> torch.Tensor:
        """Every photo whole at ``size`` (validation) -> RGB (N, 3, size, size) float in [0, 1]."""
        return F.interpolate(self.images.float() / 255, size=(size, size), mode="bilinear", antialias=True,
                             align_corners=False).clamp(0, 1)


def point_maps(ab: torch.Tensor, g: torch.Generator, wanted: torch.Tensor) -> torch.Tensor:
    """ab (B, 2, S, S) in [-1, 1] -> the hint map (B, 3, S, S) (a*m, b*m, m) of simulated points, for the
    crops where ``wanted`` (B,) bool; see the module docstring for the law."""
    B, _, S, _ = ab.shape
    dev = ab.device
    n = torch.exp(torch.rand(B, generator=g, device=dev) * math.log(MAX_POINTS + 1)).long().clamp(1, MAX_POINTS)
    active = (torch.arange(MAX_POINTS, device=dev)[None] < n[:, None]) & wanted[:, None]  # (B, P)
    big = torch.rand(B, MAX_POINTS, generator=g, device=dev) < 0.15
    size = 1 + (torch.rand(B, MAX_POINTS, generator=g, device=dev) * torch.where(big, 9, 5)).long()
    y0 = (torch.rand(B, MAX_POINTS, generator=g, device=dev) * (S - size + 1)).long()
    x0 = (torch.rand(B, MAX_POINTS, generator=g, device=dev) * (S - size + 1)).long()
    y1, x1 = y0 + size, x0 + size
    # each patch's mean colour from an integral image
    integral = F.pad(ab.float().cumsum(2).cumsum(3), (1, 0, 1, 0)).flatten(2)  # (B, 2, (S + 1)^2)

    def at(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return integral.gather(2, (y * (S + 1) + x)[:, None].expand(B, 2, -1))  # (B, 2, P)
    colour = (at(y1, x1) - at(y0, x1) - at(y1, x0) + at(y0, x0)) / (size * size)[:, None]
    r = torch.arange(S, device=dev)
    rows = (r[None, None] >= y0[..., None]) & (r[None, None] < y1[..., None])  # (B, P, S)
    cols = (r[None, None] >= x0[..., None]) & (r[None, None] < x1[..., None])
    cover = rows[..., :, None] & cols[..., None, :] & active[..., None, None]  # (B, P, S, S)
    last = (cover.to(torch.int16) * torch.arange(1, MAX_POINTS + 1, device=dev, dtype=torch.int16)[None, :, None,
                                                                                                     None]).amax(1)
    m = (last > 0).float()[:, None]  # (B, 1, S, S)
    idx = (last.long() - 1).clamp(min=0).flatten(1)  # (B, S*S)
    painted = colour.gather(2, idx[:, None].expand(B, 2, -1)).view(B, 2, S, S)
    return torch.cat((painted * m, m), dim=1)


def histograms(ab: torch.Tensor, weight: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """ab (B, 2, h, w) in [-1, 1] and pixel weights (B, h, w) -> (B, Q + 1): each bin's weighted share of the
    pixels nearest it (as Hints.ab_histogram), then the flag 1."""
    flat = ab.float().flatten(2).transpose(1, 2) * LAB.ab_scale  # (B, N, 2)
    b = bins.to(flat)
    d = (flat ** 2).sum(-1, keepdim=True) - 2 * flat @ b.T + (b ** 2).sum(-1)
    counts = torch.zeros(len(ab), len(b), device=ab.device).scatter_add_(1, d.argmin(-1), weight.flatten(1).float())
    counts = counts / counts.sum(1, keepdim=True).clamp_min(1e-6)
    return torch.cat((counts, torch.ones(len(ab), 1, device=ab.device)), dim=1)


def simulate_hints(ab: torch.Tensor, bins: torch.Tensor, g: torch.Generator) -> Hints:
    """A batch's simulated hints (every crop gets points, a reference, or both): ab (B, 2, S, S) -> Hints."""
    B, _, S, _ = ab.shape
    dev = ab.device
    u = torch.rand(B, 6, generator=g, device=dev)
    points, reference = u[:, 0] < 0.70, u[:, 0] >= 0.55
    # The histogram of the 2x2-averaged ab (4x cheaper). Averaging before binning greys the shares a little
    # against Hints.reference_hint, which bins each pixel of the reference's working-size view; the shipped
    # refiner was trained so.
    small = F.avg_pool2d(ab.float(), 2)
    h = small.shape[-1]
    area = 0.25 + 0.35 * u[:, 2]
    side = (area.sqrt() * h).long().clamp(min=2)
    y0, x0 = (u[:, 3] * (h - side + 1)).long(), (u[:, 4] * (h - side + 1)).long()
    r = torch.arange(h, device=dev)
    inside = (((r[None] >= y0[:, None]) & (r[None] < (y0 + side)[:, None]))[:, :, None]
              & ((r[None] >= x0[:, None]) & (r[None] < (x0 + side)[:, None]))[:, None, :])
    window = u[:, 1][:, None, None] < 0.4  # the whole crop, else the window
    hist = histograms(small, torch.where(window, torch.ones_like(inside), inside).float(), bins)
    other = u[:, 1] >= 0.8
    hist = torch.where(other[:, None], hist.roll(1, dims=0), hist)
    glob = hist * reference[:, None].float()
    return Hints(point_maps(ab, g, points), glob)


def lab_batch(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB (B, 3, S, S) in [0, 1] -> (L (B, 1, S, S), ab (B, 2, S, S)), both in [-1, 1]."""
    return normalize_lab(rgb_to_lab(rgb))


def chroma_gap(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ab (B, 2, h, w) of a prediction and of its truth, network units -> (B,): each image's mean chroma |ab| minus
    its truth's. Negative where the prediction is greyer than the photo."""
    return pred.float().norm(dim=1).mean((1, 2)) - target.float().norm(dim=1).mean((1, 2))


def refined_loss(model: ColorizationModel, L: torch.Tensor, ab: torch.Tensor, hints: Hints, bins: torch.Tensor, temperature: float,
                 device: torch.device, refine: bool = True, class_weights: torch.Tensor | None = None,
                 ce_weight: float = 0.0, chroma_weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, chroma_gap (B,)): the loss is the mean |decoded ab - the truth's ab| (network units) on the logits'
    grid, with the refiner or without; plus ``ce_weight`` x the rebalanced cross-entropy of the refined
    distribution (Quantization), if > 0; plus ``chroma_weight`` x the mean |chroma_gap|, if > 0. An L1 loss alone
    pays a grey colour wherever the colour is unsure, so a photo comes out greyer than it is; the chroma term
    asks each image to be as colourful as its truth overall, and leaves where the colour goes to the L1 term."""
    decoder = model.decoder
    with torch.no_grad(), autocast(device):
        logits = decoder.base(model.encoder(L), L, hints).float()
    if refine:
        with autocast(device):
            logits = decoder.refiner(logits, L, hints)
    pred = annealed_mean(logits.float(), bins, temperature)
    target = F.adaptive_avg_pool2d(ab.float(), pred.shape[-2:])
    loss = (pred - target).abs().mean()
    if ce_weight > 0:
        loss = loss + ce_weight * classification_loss(logits, ab, bins, class_weights)
    gap = chroma_gap(pred, target)
    if chroma_weight > 0:
        loss = loss + chroma_weight * gap.abs().mean()
    return loss, gap


def refined_model(source: str, width: int, device: torch.device) -> tuple[ColorizationModel, ModelConfig, dict]:
    """``source`` (a guided model) with a width-``width`` refiner (its own, to go on training it, or a new one),
    everything but the refiner frozen. Returns (model on ``device``, its config, the source's extras)."""
    model, ckpt = load_checkpoint(source, device)
    cfg: ModelConfig = ckpt["model_config"]
    if not cfg.guided or cfg.loss != "classification":
        raise ValueError(f"{source}: --refiner needs a guided classification model (trained with --guided)")
    bins = ckpt["extras"]["ab_bins"].to(device)
    refiner = HintRefiner(len(bins), cfg.temperature, width, cfg.ab_grid, bins=bins).to(device)
    if cfg.refiner_width:
        if cfg.refiner_width != width:
            raise ValueError(f"{source}: its refiner is {cfg.refiner_width} wide; give --refiner "
                             f"{cfg.refiner_width} to go on training it")
        refiner.load_state_dict(model.decoder.refiner.state_dict())
    model.decoder = RefinedDecoder(getattr(model.decoder, "base", model.decoder), refiner)
    model.requires_grad_(False).eval()
    refiner.requires_grad_(True).train()
    return model, dataclasses.replace(cfg, refiner_width=width), ckpt["extras"]


class Validation:
    """The validation photos whole, with hints drawn once (a fixed seed), so every validation sees the same."""

    def __init__(self, bank: PhotoBank, size: int, bins: torch.Tensor, chunk: int = 32) -> None:
        self.L, self.ab = lab_batch(bank.whole(size))
        g = torch.Generator(device=self.L.device).manual_seed(12345)
        # in chunks: simulating hints holds (n, 100, S, S) masks, too much for a large folder at once
        parts = [simulate_hints(self.ab[i:i + chunk], bins, g) for i in range(0, len(self.ab), chunk)]
        self.hints = Hints(torch.cat([h.local for h in parts]), torch.cat([h.global_ for h in parts]))

    @torch.no_grad()
    def error(self, model: ColorizationModel, bins: torch.Tensor, temperature: float, refine: bool,
              chunk: int = 32) -> tuple[float, float, float]:
        """(mean |ab| error, mean chroma gap (chroma_gap; < 0: greyer than the photos), mean |chroma gap|), Lab
        units, of ``model`` on these photos, with its refiner or without. The signed mean shows which way the
        colours lean; the absolute one is what --refiner-chroma charges (too grey and too bright do not cancel)."""
        model.decoder.refiner.eval()
        total, gaps = 0.0, []
        for i in range(0, len(self.L), chunk):
            hints = Hints(self.hints.local[i:i + chunk], self.hints.global_[i:i + chunk])
            loss, g = refined_loss(model, self.L[i:i + chunk], self.ab[i:i + chunk], hints, bins, temperature,
                                   self.L.device, refine)
            total, gaps = total + loss.item() * len(g), gaps + [g]
        model.decoder.refiner.train()
        gap = torch.cat(gaps) * LAB.ab_scale
        return total / len(self.L) * LAB.ab_scale, gap.mean().item(), gap.abs().mean().item()


def run_data(paths: Paths, tcfg: TrainConfig, side: int, device: torch.device) -> tuple[PhotoBank, PhotoBank]:
    """The training and validation photos (``TrainingSetup.split_files``) as PhotoBanks of ``side`` px on ``device``."""
    train_files, val_files = split_files(paths, tcfg)
    bank, val_bank = PhotoBank(train_files, side, device), PhotoBank(val_files, side, device)
    for why in bank.skipped + val_bank.skipped:
        tqdm.write(f"skipping {why}")
    return bank, val_bank


def fit_refiner(paths: Paths, tcfg: TrainConfig, width: int, device: torch.device, run_name: str | None) -> int:
    """Train a width-``width`` refiner on ``tcfg.init_from`` (a guided model) with ``tcfg``'s epochs (passes over
    the training photos), batch size, lr (cosine, after ``warmup_steps``), weight decay, seed and max_steps."""
    if not tcfg.init_from:
        raise ValueError("--refiner trains on a guided model: give it with --init-from (e.g. weights/colorizer.pt)")
    run_dir = paths.runs_dir / (run_name or time.strftime("refiner-%Y%m%d-%H%M%S"))
    if (run_dir / "last.pt").exists():
        raise ValueError(f"{run_dir} already holds a run; choose another --run-name")
    torch.manual_seed(tcfg.seed)  # a new refiner's first weights
    model, cfg, extras = refined_model(tcfg.init_from, width, device)
    refiner, bins = model.decoder.refiner, extras["ab_bins"].to(device)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = RunFolder(run_dir)
    bank, val_bank = run_data(paths, tcfg, round(cfg.image_size * BANK_SCALE), device)
    val = Validation(val_bank, cfg.image_size, bins)
    g = torch.Generator(device=device).manual_seed(tcfg.seed)
    weights = class_weights(extras["ab_prior"].to(device), tcfg.rebalance) if tcfg.refiner_ce else None
    opt = torch.optim.AdamW(refiner.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    per_epoch = math.ceil(len(bank) / tcfg.batch_size)
    total = per_epoch * tcfg.epochs if not tcfg.max_steps else min(tcfg.max_steps, per_epoch * tcfg.epochs)
    every, best, running, t0 = max(1, total // 20), float("inf"), 0.0, time.perf_counter()
    print(f"refiner ({sum(p.numel() for p in refiner.parameters()) / 1e6:.2f} M parameters) on {tcfg.init_from}: "
          f"{len(bank)} training and {len(val_bank)} validation photos, {total} steps of {tcfg.batch_size} on {device}")
    frozen_error, frozen_gap, _ = val.error(model, bins, cfg.temperature, refine=False)
    bar = tqdm(range(total), desc="refiner", unit="step")
    for step in bar:
        lr = tcfg.lr * min(1.0, (step + 1) / max(tcfg.warmup_steps, 1)) * 0.5 * (1 + math.cos(math.pi * step / total))
        for group in opt.param_groups:
            group["lr"] = lr
        L, ab = lab_batch(bank.crops(tcfg.batch_size, cfg.image_size, g, tcfg.crop_scale))
        loss, _ = refined_loss(model, L, ab, simulate_hints(ab, bins, g), bins, cfg.temperature, device,
                               class_weights=weights, ce_weight=tcfg.refiner_ce, chroma_weight=tcfg.refiner_chroma)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {step}: loss is {loss.item()}; stopping (last.pt is from before)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(refiner.parameters(), tcfg.grad_clip)
        opt.step()
        running = 0.98 * running + 0.02 * loss.item() * LAB.ab_scale if step else loss.item() * LAB.ab_scale
        bar.set_postfix(loss=f"{running:.2f}")
        if (step + 1) % every == 0 or step + 1 == total:
            err, gap, abs_gap = val.error(model, bins, cfg.temperature, refine=True)
            score = err + tcfg.refiner_chroma * abs_gap  # what the loss charges; best.pt is chosen by it
            # Lab units (train_loss: the whole loss x 110); "epoch" in passes over the photos, for RunFolder's curve
            record = {"epoch": round((step + 1) / per_epoch, 2), "step": step + 1, "train_loss": round(running, 4),
                      "val_loss": round(err, 4), "val_loss_frozen": round(frozen_error, 4),
                      "val_chroma_gap": round(gap, 3), "val_chroma_gap_abs": round(abs_gap, 3),
                      "val_chroma_gap_frozen": round(frozen_gap, 3), "val_score": round(score, 4),
                      "seconds": round(time.perf_counter() - t0, 1)}
            run.append_metrics(record)
            tqdm.write(" ".join(f"{k} {v}" for k, v in record.items()))
            state = dict(optimizer=opt, epoch=(step + 1) // per_epoch, config=dataclasses.asdict(tcfg),
                         extras=extras, best_metric=min(best, score))
            save_checkpoint(run_dir / "last.pt", model, cfg, **state)
            if score < best:
                best = score
                save_checkpoint(run_dir / "best.pt", model, cfg, **state)
    what = f"L1 + {tcfg.refiner_chroma:g} x |chroma gap|" if tcfg.refiner_chroma else "L1"
    print(f"refiner: validation L1 {frozen_error:.2f} (frozen model); best {what} {best:.2f} Lab units; {run_dir}")
    return 0

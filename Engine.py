"""Command line and training loop: the one entry point of the colourizer.

Owns argument parsing (the only reader of sys.argv), the choice of device, and the
modes: ``training`` (decoder-only AdamW on a folder of colour photos, with progress
bars, a JSON-lines log, a loss curve, per-epoch sample grids and atomic last/best
checkpoints), ``inference`` (colourise a file or folder at full resolution) and
``evaluate`` (PSNR/SSIM/colourfulness against the originals, next to the grey baseline).

Usage:
    python Engine.py --mode inference --input examples --output results
    python Engine.py --mode training --data-dir photos/train --val-dir photos/val --epochs 10
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import Quantization
from EncoderLayers import BackboneUnavailableError
from Inference import (Colorizer, amp_dtype, atomic_write, autocast, build_model, colorize_paths,
                       decode_prediction, hstack, load_checkpoint, recombine, save_checkpoint, to_uint8, vstack,
                       write_image)
from LoadData import ColorizationDataset, ImageReadError, collate_skip, find_images, make_loader
from References import DEVICES, LOSSES, VERSION, ModelConfig, Paths, TrainConfig


# ----------------------------------------------------------------------------- setup

def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' fails clearly when there is none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available (use --device auto or cpu)")
    return torch.device(name)


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


# ----------------------------------------------------------------------------- train / evaluate

def train_one_epoch(model: torch.nn.Module, loader, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    loss_fn, device: torch.device, epoch: int, grad_clip: float) -> dict:
    """One pass over ``loader`` updating the decoder. Returns {"train_loss", "images", "skipped", "seconds"}.

    Raises FloatingPointError on a NaN/inf loss, so a diverged run stops instead of
    overwriting good checkpoints.
    """
    model.train()
    total, n, skipped, t0 = 0.0, 0, 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch} train", unit="batch", leave=False)
    for batch in bar:
        skipped += batch["skipped"]
        if "L" not in batch:
            continue
        L, ab = batch["L"].to(device, non_blocking=True), batch["ab"].to(device, non_blocking=True)
        if device.type == "cuda":
            L = L.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            loss = loss_fn(model(L), ab)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"epoch {epoch}: loss is {loss.item()}; stopping (last.pt is from the previous epoch)")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.decoder.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        total += loss.item() * len(L)
        n += len(L)
        bar.set_postfix(loss=f"{total / n:.4f}")
    return {"train_loss": total / max(n, 1), "images": n, "skipped": skipped,
            "seconds": time.perf_counter() - t0}


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, loss_fn, cfg: ModelConfig, bins: torch.Tensor | None,
             device: torch.device) -> dict:
    """Validation loss plus the decoded prediction's mean |ab error| in Lab units (comparable across losses).

    Returns {"val_loss", "val_ab_mae", "images", "skipped"}.
    """
    model.eval()
    total, mae, n, skipped = 0.0, 0.0, 0, 0
    for batch in tqdm(loader, desc="validate", unit="batch", leave=False):
        skipped += batch["skipped"]
        if "L" not in batch:
            continue
        L, ab = batch["L"].to(device), batch["ab"].to(device)
        with autocast(device):
            pred = model(L)
        total += loss_fn(pred, ab).item() * len(L)
        ab_pred = decode_prediction(pred, cfg, bins)
        ab_pred = F.interpolate(ab_pred, size=ab.shape[-2:], mode="bilinear", align_corners=False)
        mae += (ab_pred - ab).abs().mean(dim=(1, 2, 3)).sum().item() * 110.0
        n += len(L)
    return {"val_loss": total / max(n, 1), "val_ab_mae": mae / max(n, 1), "images": n, "skipped": skipped}


@torch.no_grad()
def sample_grid(model: torch.nn.Module, batch: dict, cfg: ModelConfig, bins, device: torch.device) -> np.ndarray:
    """Rows of grey | prediction | truth for a fixed validation batch, uint8 RGB."""
    model.eval()
    L, ab = batch["L"].to(device), batch["ab"].to(device)
    with autocast(device):
        pred = model(L)
    L_lab = L * 50.0 + 50.0
    rows = []
    for i in range(len(L)):
        grey = recombine(L_lab[i:i + 1], torch.zeros_like(ab[i:i + 1]))
        ours = recombine(L_lab[i:i + 1], decode_prediction(pred[i:i + 1], cfg, bins))
        truth = recombine(L_lab[i:i + 1], ab[i:i + 1])
        rows.append(hstack([to_uint8(t[0].cpu()) for t in (grey, ours, truth)]))
    return vstack(rows)


def plot_curve(log: list[dict], path: Path) -> None:
    """Train/val loss per epoch as a PNG (matplotlib, imported here: only training needs it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [r["epoch"] for r in log]
    ax.plot(epochs, [r["train_loss"] for r in log], "o-", label="train")
    ax.plot(epochs, [r["val_loss"] for r in log], "o-", label="validation")
    ax.set(xlabel="epoch", ylabel="loss", title="colorizer loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


# ----------------------------------------------------------------------------- modes

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


def class_prior(files: list[Path], cfg: ModelConfig, tcfg: TrainConfig) -> dict:
    """ab bins and their empirical prior over the (un-augmented) training images."""
    bins = Quantization.ab_bins(cfg.ab_grid)
    ds = ColorizationDataset(files, cfg.image_size, train=False)
    loader = make_loader(ds, tcfg.batch_size, shuffle=False, workers=tcfg.workers)
    batches = (b["ab"][:, :, ::4, ::4] for b in tqdm(loader, desc="colour prior", unit="batch", leave=False) if "ab" in b)
    return {"ab_bins": bins, "ab_prior": Quantization.bin_prior(batches, bins)}


def run_training(args: argparse.Namespace, paths: Paths, cfg: ModelConfig, tcfg: TrainConfig,
                 device: torch.device) -> int:
    """Train the decoder; write metrics.jsonl, loss.png, samples/, last.pt and best.pt to the run folder."""
    seed_everything(tcfg.seed)
    train_files, val_files = split_files(paths, tcfg)
    ckpt = None
    if args.resume:
        resume = Path(args.resume)
        resume = resume / "last.pt" if resume.is_dir() else resume
        model, ckpt = load_checkpoint(resume, device)
        cfg, run_dir, start = ckpt["model_config"], resume.parent, ckpt["epoch"] + 1
        extras, best = ckpt["extras"], ckpt["best_metric"]
    else:
        extras = class_prior(train_files, cfg, tcfg) if cfg.loss == "classification" else {}
        model = build_model(cfg, paths.backbone_weights, len(extras["ab_bins"]) if extras else None).to(device)
        run_dir = paths.runs_dir / (args.run_name or time.strftime("%Y%m%d-%H%M%S"))
        if (run_dir / "last.pt").exists():  # never overwrite an earlier run's checkpoints
            raise ValueError(f"{run_dir} already holds a run: continue it with --resume {run_dir}, "
                             "or choose another --run-name")
        start, best = 0, math.inf
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    bins = extras.get("ab_bins")
    weights = Quantization.class_weights(extras["ab_prior"], tcfg.rebalance) if bins is not None else None
    bins = bins.to(device) if bins is not None else None
    loss_fn = make_loss_fn(cfg, tcfg, bins, weights)

    pin = device.type == "cuda"
    train_loader = make_loader(ColorizationDataset(train_files, cfg.image_size, True, tcfg.crop_scale),
                               tcfg.batch_size, shuffle=True, workers=tcfg.workers, pin_memory=pin, seed=tcfg.seed + start)
    val_ds = ColorizationDataset(val_files, cfg.image_size, train=False)
    val_loader = make_loader(val_ds, tcfg.batch_size, shuffle=False, workers=tcfg.workers, pin_memory=pin)
    samples = collate_skip([val_ds[i] for i in range(min(tcfg.samples, len(val_ds)))])

    optimizer = torch.optim.AdamW(model.decoder.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)
    if ckpt is not None and ckpt["optimizer"] is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["scaler"] is not None:
            scaler.load_state_dict(ckpt["scaler"])
    config = {"model": cfg, "train": tcfg, "paths": paths, "device": str(device), "version": VERSION}
    (run_dir / "samples").mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "metrics.jsonl"
    log = [json.loads(line) for line in log_path.read_text().splitlines() if line] if ckpt and log_path.exists() else []
    n_params = sum(p.numel() for p in model.decoder.parameters())
    print(f"training on {device}: {len(train_files)} train / {len(val_files)} val images, {cfg.image_size}px, "
          f"loss {cfg.loss}, {n_params / 1e6:.2f}M trainable parameters, run folder {run_dir}")

    for epoch in range(start, tcfg.epochs):
        for group in optimizer.param_groups:  # cosine schedule, stateless so --resume needs nothing extra
            group["lr"] = tcfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / tcfg.epochs))
        tr = train_one_epoch(model, train_loader, optimizer, scaler, loss_fn, device, epoch, tcfg.grad_clip)
        ev = evaluate(model, val_loader, loss_fn, cfg, bins, device)
        record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], **tr,
                  "val_loss": ev["val_loss"], "val_ab_mae": ev["val_ab_mae"], "val_skipped": ev["skipped"]}
        log.append(record)
        atomic_write(log_path, lambda tmp: Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in log)))
        plot_curve(log, run_dir / "loss.png")
        write_image(run_dir / "samples" / f"epoch_{epoch:03d}.png", sample_grid(model, samples, cfg, bins, device))
        is_best = ev["val_loss"] < best
        best = min(best, ev["val_loss"])
        state = dict(optimizer=optimizer, scaler=scaler, epoch=epoch, best_metric=best, config=config, extras=extras)
        save_checkpoint(run_dir / "last.pt", model, cfg, **state)
        if is_best:
            save_checkpoint(run_dir / "best.pt", model, cfg, **state)
        tqdm.write(f"epoch {epoch}: train {tr['train_loss']:.4f}  val {ev['val_loss']:.4f}  "
                   f"val |ab err| {ev['val_ab_mae']:.2f}  {tr['seconds']:.0f}s  "
                   f"skipped {tr['skipped'] + ev['skipped']}{'  *best*' if is_best else ''}")
    print(f"done: best val loss {best:.4f}; checkpoints in {run_dir}")
    return 0


def open_colorizer(args: argparse.Namespace, paths: Paths, device: torch.device) -> Colorizer:
    """The --checkpoint model (default: the shipped one) on ``device``, with --temperature applied."""
    checkpoint = Path(args.checkpoint) if args.checkpoint else paths.default_checkpoint
    return Colorizer.from_checkpoint(checkpoint, device, args.temperature)


def run_evaluate(args: argparse.Namespace, paths: Paths, device: torch.device) -> int:
    """Score the model and the grey baseline on --input colour photos; print the table, write CSV/JSON (+ grid)."""
    from Evaluate import evaluate_folder, format_table, write_reports
    from Metrics import summarise

    colorizer = open_colorizer(args, paths, device)
    rows, grid, failed = evaluate_folder(colorizer, find_images(args.input), args.batch_size or 8,
                                         grid_height=160 if args.output else 0)
    if not rows:
        raise ValueError(f"{args.input}: no image could be read")
    print(format_table(summarise(rows)))
    out_dir = Path(args.output) if args.output else paths.results_dir / "evaluation"
    written = write_reports(rows, out_dir, grid)
    print("wrote " + ", ".join(str(p) for p in written.values()))
    for f, reason in failed:
        print(f"  {reason}", file=sys.stderr)
    return 1 if failed else 0


def run_serve(args: argparse.Namespace, paths: Paths, device: torch.device) -> int:
    """Serve the web page and HTTP API under waitress until interrupted."""
    from WebApp import serve

    serve(open_colorizer(args, paths, device), args.host, args.port, args.threads)
    return 0


def run_inference(args: argparse.Namespace, paths: Paths, device: torch.device) -> int:
    """Colourise --input (file or folder) into --output; non-zero exit if any file failed."""
    colorizer = open_colorizer(args, paths, device)
    files = find_images(args.input)
    report = colorize_paths(colorizer, files, Path(args.input), paths.results_dir,
                            batch_size=args.batch_size or 8, side_by_side=args.side_by_side,
                            suffix="." + args.format)
    print(f"wrote {len(report.written)} image(s) to {paths.results_dir} with {colorizer.name}"
          + (f"; {len(report.failed)} failed:" if report.failed else ""))
    for f, reason in report.failed:
        print(f"  {reason}", file=sys.stderr)
    return 1 if report.failed else 0


# ----------------------------------------------------------------------------- command line

class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" except where the help text already explains an unset default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    m, t, p = ModelConfig(), TrainConfig(), Paths()
    ap = argparse.ArgumentParser(
        prog="python Engine.py", formatter_class=_HelpFormatter,
        description="Automatic image colourizer: a frozen ImageNet VGG16 encoder and a trained decoder "
                    "predict the Lab colour (ab) of a black-and-white photo. 'inference' colourises a file "
                    "or folder at full resolution; 'training' trains the decoder on a folder of colour photos.")
    ap.add_argument("--mode", choices=("inference", "training", "evaluate", "serve"), default="inference",
                    help="inference: colourise --input; training: train on --data-dir; evaluate: score the "
                         "model and the grey baseline on --input colour photos; serve: web page and HTTP API")
    ap.add_argument("--device", choices=DEVICES, default="auto", help="auto = CUDA when available, else CPU")
    ap.add_argument("--checkpoint", default=None,
                    help=f"model to colourise with (inference) (default: {p.default_checkpoint.relative_to(p.default_checkpoint.parents[1])})")
    ap.add_argument("--batch-size", type=int, default=None,
                    help=f"images per forward pass (default: {t.batch_size} for training, 8 for inference)")
    g = ap.add_argument_group("inference")
    g.add_argument("--input", default=str(p.examples_dir.relative_to(p.examples_dir.parent)),
                   help="an image file or a folder (searched recursively)")
    g.add_argument("--output", default=None,
                   help=f"folder for the outputs, created (default: {p.results_dir}/ for inference; evaluate writes "
                        f"CSV/JSON to {p.results_dir}/evaluation/, plus a grid PNG only when --output is given)")
    g.add_argument("--format", choices=("png", "jpg", "webp"), default="png", help="output file format")
    g.add_argument("--side-by-side", action="store_true",
                   help="also write <stem>_compare.png: grey | colourised | original (if in colour)")
    g.add_argument("--temperature", type=float, default=None,
                   help="annealed-mean temperature for classification models (lower = more vivid) "
                        f"(default: the checkpoint's, {m.temperature} when trained here)")
    g = ap.add_argument_group("serve")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 = every interface)")
    g.add_argument("--port", type=int, default=8000, help="TCP port")
    g.add_argument("--threads", type=int, default=4, help="waitress worker threads (forward passes still run one at a time)")
    g = ap.add_argument_group("training")
    g.add_argument("--data-dir", default=str(p.data_dir), help="folder of colour photos to train on")
    g.add_argument("--val-dir", default=None, help="validation photos (default: a seeded 10%% of --data-dir)")
    g.add_argument("--runs-dir", default=str(p.runs_dir), help="where run folders are created")
    g.add_argument("--run-name", default=None, help="run folder name (default: a timestamp)")
    g.add_argument("--resume", default=None, help="continue from a run folder or its last.pt")
    g.add_argument("--backbone-weights", default=p.backbone_weights,
                   help="VGG16 weights file (torchvision layout); unset = torchvision's IMAGENET1K_V1 "
                        "(cached or downloaded); 'none' = random (tests only)")
    g.add_argument("--image-size", type=int, default=m.image_size, help="working resolution (square side)")
    g.add_argument("--loss", choices=LOSSES, default=m.loss, help="ab loss (see README)")
    g.add_argument("--rebalance", type=float, default=t.rebalance,
                   help="classification: class-rebalancing lambda, 0.5 = Zhang et al., 1 = none (rare colours weigh "
                        "more the lower it is)")
    g.add_argument("--epochs", type=int, default=t.epochs, help="total epochs (also when resuming)")
    g.add_argument("--lr", type=float, default=t.lr, help="AdamW peak learning rate (cosine decay)")
    g.add_argument("--weight-decay", type=float, default=t.weight_decay, help="AdamW weight decay")
    g.add_argument("--seed", type=int, default=t.seed, help="random seed")
    g.add_argument("--workers", type=int, default=t.workers, help="data-loading processes")
    g.add_argument("--max-train-images", type=int, default=t.max_train_images, help="cap on training images, 0 = all")
    g.add_argument("--samples", type=int, default=t.samples, help="validation images in each epoch's sample grid")
    g.add_argument("--crop-scale", type=float, default=t.crop_scale[0],
                   help="smallest random crop, as a fraction of the image area (augmentation)")
    g.add_argument("--decoder-width", type=float, default=1.0,
                   help="multiplier on every decoder width (1 = the shipped decoder, 2.0 M parameters)")
    return ap


def configs_from_args(args: argparse.Namespace) -> tuple[Paths, ModelConfig, TrainConfig]:
    """The References defaults with the command line's overrides applied."""
    paths = dataclasses.replace(
        Paths(), data_dir=Path(args.data_dir), val_dir=Path(args.val_dir) if args.val_dir else None,
        runs_dir=Path(args.runs_dir), results_dir=Path(args.output) if args.output else Paths().results_dir,
        backbone_weights=args.backbone_weights)
    m = ModelConfig()
    cfg = dataclasses.replace(m, image_size=args.image_size, loss=args.loss,
                              widths=tuple((k, round(w * args.decoder_width)) for k, w in m.widths),
                              global_width=round(m.global_width * args.decoder_width))
    tcfg = dataclasses.replace(
        TrainConfig(), epochs=args.epochs, batch_size=args.batch_size or TrainConfig().batch_size, lr=args.lr,
        weight_decay=args.weight_decay, seed=args.seed, workers=args.workers,
        max_train_images=args.max_train_images, samples=args.samples, rebalance=args.rebalance,
        crop_scale=(args.crop_scale, 1.0))
    return paths, cfg, tcfg


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: sys.argv), pick the device once, run the mode. Returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.image_size < 32 or args.image_size % 16:
        print(f"error: --image-size must be a multiple of 16 and at least 32 (got {args.image_size})", file=sys.stderr)
        return 2
    try:
        paths, cfg, tcfg = configs_from_args(args)
        device = resolve_device(args.device)
        if args.mode == "training":
            return run_training(args, paths, cfg, tcfg, device)
        if args.mode == "evaluate":
            return run_evaluate(args, paths, device)
        if args.mode == "serve":
            return run_serve(args, paths, device)
        return run_inference(args, paths, device)
    except (FileNotFoundError, ValueError, BackboneUnavailableError, ImageReadError, FloatingPointError,
            RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    sys.exit(main())

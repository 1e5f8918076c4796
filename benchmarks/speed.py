"""Speed and memory figures for the colourizer on the current device (a script, not a test).

Prints: parameter counts; GFLOPs per 256x256 image; forward-only inference throughput at
batch 1 and 16 (256x256); end-to-end file-to-file throughput on a folder; training
throughput (forward + backward + AdamW step on the decoder) at the model's working size;
peak memory. Each figure is the median of --repeats timed runs after --warmup runs.

Usage:
    python benchmarks/speed.py [--checkpoint weights/colorizer.pt] [--device auto] [--folder examples]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from Inference import Colorizer, autocast, colorize_paths  # noqa: E402
from LoadData import find_images  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROOT / "weights" / "colorizer.pt"))
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--folder", default=str(ROOT / "examples"), help="images for the end-to-end figure")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--train-batch", type=int, default=16)
    args = ap.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    colorizer = Colorizer.from_checkpoint(args.checkpoint, device)
    model, cfg = colorizer.model, colorizer.cfg
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}); torch {torch.__version__}; model {Path(args.checkpoint).name} "
          f"(loss {cfg.loss}, working size {cfg.image_size})")

    enc = sum(p.numel() for p in model.encoder.parameters())
    dec = sum(p.numel() for p in model.decoder.parameters())
    print(f"parameters: encoder {enc / 1e6:.2f} M (frozen), decoder {dec / 1e6:.2f} M (trained), total {(enc + dec) / 1e6:.2f} M")
    x1 = torch.zeros(1, 1, 256, 256, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x1)
    print(f"compute: {fc.get_total_flops() / 1e9:.1f} GFLOPs per 256x256 image (forward; 1 multiply-add = 2 FLOPs)")

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for batch in (1, 16):
        x = torch.rand(batch, 1, 256, 256, device=device) * 2 - 1

        def forward():
            with torch.inference_mode(), autocast(device):
                model(x)
        sec = timed(forward, device, args.warmup, args.repeats)
        print(f"inference, forward only, 256x256, batch {batch:2d}: {batch / sec:8.1f} images/s ({sec * 1e3:.0f} ms/batch)")

    files = find_images(args.folder)
    with tempfile.TemporaryDirectory() as out:
        def end_to_end():
            colorize_paths(colorizer, files, Path(args.folder), Path(out), progress=False)
        sec = timed(end_to_end, device, 1, max(1, args.repeats // 2))
    print(f"inference, end to end (decode, colourise at full size, encode PNG): {len(files) / sec:.2f} images/s "
          f"on {len(files)} files of {args.folder}")

    model.train()
    opt = torch.optim.AdamW(model.decoder.parameters(), lr=1e-4)
    s = cfg.image_size
    L = torch.rand(args.train_batch, 1, s, s, device=device) * 2 - 1
    target = model.eval()(L).detach()

    def step():
        with autocast(device):
            loss = (model(L).float() - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.train()
    sec = timed(step, device, args.warmup, args.repeats)
    print(f"training, forward + backward + step, {s}x{s}, batch {args.train_batch}: {args.train_batch / sec:.1f} images/s")

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory: process RSS {rss:.0f} MiB" + (
        f"; CUDA allocated {torch.cuda.max_memory_allocated(device) / 2 ** 20:.0f} MiB" if device.type == "cuda" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

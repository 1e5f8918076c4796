"""Data-parallel scaling: the same short training run in 1 process and under torchrun with N (a script, not a test).

Trains one epoch on the first --images photos of --data-dir, at --image-size, in one process and
then with ``torchrun --standalone --nproc_per_node=N``, and prints the training images/s of each
(from the run's own metrics.jsonl: images over the epoch's training seconds) and the ratio. The
global batch is the same in both (--batch-size per process x N = the single run's batch), so both
runs take the same number of optimizer steps.

Usage:
    python benchmarks/ddp_scaling.py --data-dir ../shared/data/colorize-corpus/train \
        --backbone-weights ../shared/weights/vgg16_features_imagenet.pth [--nproc 2] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(nproc: int, args: argparse.Namespace, runs: Path) -> dict:
    name = f"p{nproc}"
    per_process = args.batch_size // nproc
    train = [str(ROOT / "Engine.py"), "--mode", "training", "--data-dir", args.data_dir,
             *(["--val-dir", args.val_dir] if args.val_dir else []),
             "--max-train-images", str(args.images), "--epochs", "1", "--image-size", str(args.image_size),
             "--batch-size", str(per_process), "--workers", str(args.workers), "--samples", "1",
             "--backbone-weights", args.backbone_weights, "--device", args.device, "--runs-dir", str(runs),
             "--run-name", name]
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    f"--nproc_per_node={nproc}"]
    env = dict(os.environ)
    if nproc > 1 and args.device == "cpu":
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))  # share the cores, do not oversubscribe
    t = time.perf_counter()
    subprocess.run(launcher + train, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    record = json.loads((runs / name / "metrics.jsonl").read_text().splitlines()[0])
    return {"processes": nproc, "images": record["images"], "seconds": record["seconds"], "wall": wall,
            "rate": record["images"] / record["seconds"], "batch": per_process}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--val-dir", default=None, help="validation photos (default: 10%% of --data-dir)")
    ap.add_argument("--backbone-weights", default="none")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16, help="global batch (split over the processes)")
    ap.add_argument("--workers", type=int, default=1, help="loader workers per process")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(n, args, Path(tmp)) for n in (1, args.nproc)]
    for r in results:
        print(f"{r['processes']} process(es), batch {r['batch']} each: {r['images']} images in {r['seconds']:.1f} s "
              f"of training ({r['rate']:.2f} images/s; {r['wall']:.0f} s wall with start-up and validation)")
    print(f"speed-up from 1 to {args.nproc} processes: {results[1]['rate'] / results[0]['rate']:.2f}x "
          f"(same global batch {args.batch_size}, same run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

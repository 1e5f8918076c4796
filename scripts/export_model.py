"""Turn a training checkpoint into a release file: float16 weights, no optimizer state.

The release file keeps everything inference needs (encoder and decoder weights, the
model config, the loss and, for classification, the ab bins and prior) plus the
training record (epoch, best metric, resolved config). It is what ``weights/colorizer.pt`` is.

Usage:
    python scripts/export_model.py runs/huber128/best.pt weights/colorizer.pt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from Inference import load_checkpoint, save_checkpoint  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="a last.pt/best.pt from a training run")
    ap.add_argument("output", help="release file to write, e.g. weights/colorizer.pt")
    args = ap.parse_args(argv)
    model, ckpt = load_checkpoint(args.checkpoint, torch.device("cpu"))
    save_checkpoint(Path(args.output), model, ckpt["model_config"], epoch=ckpt["epoch"],
                    best_metric=ckpt["best_metric"], config=ckpt["config"], extras=ckpt["extras"], half=True)
    size = Path(args.output).stat().st_size / 2 ** 20
    print(f"wrote {args.output}: {size:.1f} MiB (epoch {ckpt['epoch']}, best val loss {ckpt['best_metric']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Forward cost of the model shapes in the README sweep table (a script, not a test).

Builds each (working size, decoder width[, ensemble members]) shape with the real backbone and a fresh decoder
(cost does not depend on the decoder's weights), then times the forward pass at batch
--batch in interleaved rounds, so that the ratios come from the same run on a noisy machine.
Prints the median ms per image and each shape's ratio to the first.

Usage:
    python benchmarks/model_shapes.py [--backbone ../shared/weights/vgg16_features_imagenet.pth] \
        [--shapes 128x1 176x1 128x1.5 128x1x2] [--batch 8] [--rounds 7]
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ModelIO import build_model  # noqa: E402
from References import ModelConfig  # noqa: E402


def shape_config(spec: str) -> ModelConfig:
    """'176x1.5' -> a ModelConfig at 176 px with every decoder width x 1.5 (as --decoder-width);
    '128x1x2' -> two such decoders as one ensemble (Export.assemble)."""
    size, width, members = (spec.split("x") + ["1"])[:3]
    return dataclasses.replace(ModelConfig().scaled(float(width)), image_size=int(size), members=int(members))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default=None, help="VGG16 features file (default: torchvision's cache)")
    p.add_argument("--shapes", nargs="+", default=["128x1", "176x1", "128x1.5"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    torch.set_grad_enabled(False)
    models = {s: (build_model(shape_config(s), args.backbone).eval(), shape_config(s).image_size)
              for s in args.shapes}
    times: dict[str, list[float]] = {s: [] for s in args.shapes}
    for rnd in range(args.rounds + 1):  # round 0 warms up
        for s, (model, size) in models.items():
            x = torch.rand(args.batch, 1, size, size)
            t0 = time.perf_counter()
            model(x)
            if rnd:
                times[s].append((time.perf_counter() - t0) / args.batch)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"median of {args.rounds} rounds")
    base = statistics.median(times[args.shapes[0]])
    for s in args.shapes:
        med = statistics.median(times[s])
        params = sum(p.numel() for p in models[s][0].decoder.parameters())
        print(f"{s:>8}: {med * 1e3:7.1f} ms/image  x{med / base:.2f}  decoder {params / 1e6:.2f}M params")


if __name__ == "__main__":
    main()

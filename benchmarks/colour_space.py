"""Timings of the colour-space hot paths (a script that prints figures, not a test).

Each figure is the median of ``--repeats`` calls in this process, after one warm-up call, as wall time and as
CPU time of the process (all threads; steadier than wall time on a shared machine):
  * ``FullResolution.recombine_image`` on a synthetic 48 MP greyscale scan and a 12 MP colour image
    with smooth random ab strong enough to push many pixels out of gamut (upsampling, gamut fit, sRGB);
  * ``FullResolution.working_L`` of the 48 MP scan (resize + Lab L at 128);
  * ``LoadData.rgb_to_lab`` of one (3, 128, 128) crop (what each DataLoader worker does per item) and of a
    (16, 3, 128, 128) batch; ``LoadData.fit_to_gamut`` and ``lab_to_rgb`` of that batch with chroma x3.
``--repo`` imports the modules from another checkout (e.g. the code before a change), so two runs of
this script on the same machine compare them.

Usage:
    python benchmarks/colour_space.py [--repeats 7] [--repo ../old-checkout] [--only recombine]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def median_ms(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) time of ``fn()`` in milliseconds over ``repeats`` calls, after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def smooth_ab(rng: np.random.Generator, h: int = 64, w: int = 64, strength: float = 0.6) -> np.ndarray:
    """(2, h, w) float32 in [-strength, strength]: random ab, box-blurred so it looks like a prediction."""
    ab = (rng.random((2, h + 4, w + 4), dtype=np.float32) * 2 - 1) * strength
    out = np.zeros((2, h, w), np.float32)
    for dy in range(5):
        for dx in range(5):
            out += ab[:, dy:dy + h, dx:dx + w]
    return out / 25


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--repo", default=str(ROOT), help="checkout whose modules to time")
    ap.add_argument("--only", default="", help="time only the rows whose name contains this")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(args.repo).resolve()))
    import torch

    import FullResolution as FR
    from LoadData import fit_to_gamut, lab_to_rgb, rgb_to_lab

    torch.set_num_threads(1)  # as in a DataLoader worker
    rng = np.random.default_rng(0)
    h, w = 6000, 8000  # 48 MP, 4:3
    grey = np.repeat(np.repeat(rng.integers(0, 256, (h // 40, w // 40), dtype=np.uint8), 40, 0), 40, 1)
    grey = (grey.astype(np.int16) + rng.integers(-6, 7, (h, w), dtype=np.int16)).clip(0, 255).astype(np.uint8)
    colour = rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    ab = smooth_ab(rng)
    crop = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0))
    batch = torch.rand(16, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    lab3 = rgb_to_lab(batch) * torch.tensor([1.0, 3.0, 3.0]).view(3, 1, 1)

    rows = [
        ("recombine_image, 48 MP grey", lambda: FR.recombine_image(grey, ab)),
        ("recombine_image, 12 MP colour", lambda: FR.recombine_image(colour, ab)),
        ("working_L, 48 MP grey", lambda: FR.working_L(grey, 128)),
        ("rgb_to_lab, one 128x128 crop (1 thread)", lambda: rgb_to_lab(crop)),
        ("rgb_to_lab, 16x3x128x128 (1 thread)", lambda: rgb_to_lab(batch)),
        ("fit_to_gamut, 16x3x128x128, chroma x3 (1 thread)", lambda: fit_to_gamut(lab3)),
        ("lab_to_rgb, 16x3x128x128 (1 thread)", lambda: lab_to_rgb(lab3)),
    ]
    print(f"{Path(args.repo).resolve().name}: median of {args.repeats}, {FR.threads()} thread(s) for strips")
    print("| what | wall ms | CPU ms |\n|---|---:|---:|")
    for name, fn in (r for r in rows if args.only in r[0]):
        wall, cpu = median_ms(fn, args.repeats)
        print(f"| {name} | {wall:.2f} | {cpu:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

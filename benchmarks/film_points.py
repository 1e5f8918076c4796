"""How well and how fast a film's colour points are tracked (FilmPoints.py); a script that prints figures.

  1. Accuracy: examples/coffee.png in grey, panned (-5, -2) px a frame at 640 x 360 with grain (sigma 4 grey
     levels), 6 points given on frame 0: the distance of each tracked point from where its content went, after
     each frame (median and max over points and frames) and after the last (--frames).
  2. Cost: the tracker's time per frame (median over --repeats runs of the whole pan) for 1, 10 and 100 points,
     and the shared flow's (Temporal.Motions: DIS both ways and its check), which the tracker reuses.

Usage:
    python benchmarks/film_points.py [--frames 12] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from FilmPoints import FilmPoints  # noqa: E402
from Hints import Point  # noqa: E402
from Temporal import Motions, flow_grid, luminance  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
W, H, DX, DY, MARGIN = 640, 360, 5, 2, 80


def pan(frames: int, seed: int = 0) -> list[np.ndarray]:
    """The grey photo panned (-DX, -DY) px a frame with grain, uint8 (H, W) each."""
    grey = cv2.cvtColor(cv2.imread(str(ROOT / "examples" / "coffee.png")), cv2.COLOR_BGR2GRAY)
    need = (W + DX * frames + MARGIN, H + DY * frames + MARGIN)
    scale = max(need[0] / grey.shape[1], need[1] / grey.shape[0])
    big = cv2.resize(grey, (round(grey.shape[1] * scale) + 1, round(grey.shape[0] * scale) + 1),
                     interpolation=cv2.INTER_CUBIC).astype(np.float32)
    rng = np.random.default_rng(seed)
    return [np.clip(big[DY * t:DY * t + H, DX * t:DX * t + W] + rng.normal(0, 4, (H, W)), 0, 255).astype(np.uint8)
            for t in range(frames + 1)]


def run(points: list[Point], frames: list[np.ndarray]) -> tuple[list[tuple[Point, ...]], float, float]:
    """Track ``points`` through ``frames`` -> (each frame's points, tracker seconds, flow seconds)."""
    grid = flow_grid((H, W))
    tracker, motions = FilmPoints(points, W, H, grid), Motions()
    seen, t_track, t_flow = [], 0.0, 0.0
    for index, frame in enumerate(frames):
        t = time.perf_counter()
        motion = motions(luminance(frame, grid))
        t_flow += time.perf_counter() - t
        t = time.perf_counter()
        seen.append(tracker(index, motion))
        t_track += time.perf_counter() - t
    return seen, t_track, t_flow


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    frames = pan(args.frames)
    given = [Point(float(x), float(y), (60.0, 40.0), radius=6, frame=0) for x in (200, 330, 460) for y in (100, 250)]
    seen, _, _ = run(given, frames)
    errors = [[float(np.hypot(p.x - (g.x - DX * t), p.y - (g.y - DY * t))) for p, g in zip(points, given)]
              for t, points in enumerate(seen)]
    kept = len(seen[-1])
    every = [e for frame in errors[1:] for e in frame]
    print(f"pan of ({-DX}, {-DY}) px a frame, {W} x {H}, grain 4, {len(given)} points, {args.frames} frames "
          f"(a flow-grid cell is {W / flow_grid((H, W))[1]:.1f} px):")
    print(f"  points kept to the end: {kept} of {len(given)}")
    print(f"  error over all frames: median {statistics.median(every):.2f} px, max {max(every):.2f} px")
    print(f"  error after the last frame: median {statistics.median(errors[-1]):.2f} px, max {max(errors[-1]):.2f} px")
    rng = np.random.default_rng(1)
    for n in (1, 10, 100):
        points = [Point(float(rng.uniform(120, W - 120)), float(rng.uniform(80, H - 80)), (60.0, 40.0), frame=0)
                  for _ in range(n)]
        runs = [run(points, frames) for _ in range(args.repeats)]
        per_frame = statistics.median(r[1] for r in runs) / len(frames) * 1000
        flow = statistics.median(r[2] for r in runs) / len(frames) * 1000
        print(f"  {n:3d} point(s): tracker {per_frame:.2f} ms a frame; the shared flow {flow:.2f} ms a frame "
              f"(medians of {args.repeats} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

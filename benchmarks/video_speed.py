"""Video speed, memory and flicker (a script that prints figures, not a test).

For synthetic clips at each size (scripts/make_demo_clip.py: a pan across a bundled photo with grain
and flicker, and a cut), it prints:
  * the CLI in a fresh process, frame by frame (S = 0) and stabilised (the default S), in interleaved
    rounds: median frames per second over the whole run (decode, network, stabiliser, full-resolution
    recombination, H.264 encode; start-up excluded, as the CLI's own per-video line reports it) and
    the process's peak RSS;
  * in-process stage costs, ms per frame (one pass each, cumulative): decode only; + network; + flow,
    stabiliser and recombination; + encode;
  * the warping error (Temporal.WarpingError, Lab units) frame by frame and stabilised, and their ratio.

``--sweep S1 S2 ...`` instead prints the warping error of examples/film_demo.mp4 for each smoothing S
(how the default was chosen).

Usage:
    python benchmarks/video_speed.py [--sizes 854x480 1920x1080] [--frames 48] [--repeats 3] [--device cpu]
    python benchmarks/video_speed.py --sweep 0 0.5 0.7 0.8 0.9
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
from make_demo_clip import clip_frames, write_clip  # noqa: E402


def cli_run(clip: Path, out: Path, smoothing: float, device: str) -> tuple[float, float]:
    """(fps the CLI reports for the video, peak RSS MiB) of one run in a fresh process."""
    cmd = [sys.executable, str(ROOT / "Engine.py"), str(clip), "--output", str(out), "--device", device,
           "--temporal-smoothing", str(smoothing)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    text = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{text}")
    found = re.search(r"\(([\d.]+) fps\)", text)
    return float(found.group(1)), usage.ru_maxrss / 1024


def stage_costs(clip: Path, smoothing: float, device: str) -> dict[str, float]:
    """ms per frame of each pipeline stage, from cumulative passes over the clip in this process."""
    import torch

    import Evaluate
    import Video
    import VideoFiles
    from Inference import Colorizer

    colorizer = Colorizer.from_checkpoint(ROOT / "weights" / "colorizer.pt", torch.device(device))

    def timed(fn) -> float:
        t = time.perf_counter()
        n = fn()
        return (time.perf_counter() - t) * 1000 / n

    def decode() -> int:
        return sum(1 for _ in VideoFiles.open_video(clip)[1])

    def network() -> int:
        info, frames = VideoFiles.open_video(clip)
        n = 0
        for batch in Video.batched(frames, Video.frames_per_batch(info, 8)):
            colorizer.ab_for(batch)
            n += len(batch)
        return n

    def colourise() -> int:
        info, frames = VideoFiles.open_video(clip)
        return sum(1 for _ in Video.colorize_frames(colorizer, info, frames, smoothing))

    def everything() -> int:
        with tempfile.TemporaryDirectory() as d:
            return Video.colorize_video(colorizer, clip, Path(d) / "o.mp4", smoothing, progress=False).frames

    costs = {name: timed(fn) for name, fn in (("decode", decode), ("+ network", network),
                                              ("+ stabilise, recombine", colourise), ("+ encode", everything))}
    rows = {s: Evaluate.flicker(colorizer, clip, s) for s in (0.0, smoothing)}
    costs["warp error S=0"] = rows[0.0]["warping_error"]
    costs[f"warp error S={smoothing:g}"] = rows[smoothing]["warping_error"]
    return costs


def sweep(strengths: list[float], device: str) -> int:
    """The warping error of examples/film_demo.mp4 at each smoothing, and the carried colour's half-life."""
    import math

    import torch

    import Evaluate
    from Inference import Colorizer

    colorizer = Colorizer.from_checkpoint(ROOT / "weights" / "colorizer.pt", torch.device(device))
    clip = ROOT / "examples" / "film_demo.mp4"
    base = None
    for s in strengths:
        err = Evaluate.flicker(colorizer, clip, s)["warping_error"]
        base = base or err
        half = f"{math.log(0.5) / math.log(s):.1f} frames" if 0 < s < 1 else "-"
        print(f"S={s:g}: warping error {err:.3f} ({err / base:.2f}x the first), half-life of carried colour {half}")
    return 0


def main() -> int:
    from References import VideoConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["854x480", "1920x1080"], help="frame sizes WxH")
    ap.add_argument("--frames", type=int, default=48, help="frames per clip (a cut two thirds in)")
    ap.add_argument("--repeats", type=int, default=3, help="CLI runs per size and setting (medians)")
    ap.add_argument("--smoothing", type=float, default=VideoConfig().temporal_smoothing)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sweep", nargs="+", type=float, default=None,
                    help="only print the demo clip's warping error at each of these smoothings")
    args = ap.parse_args()
    if args.sweep:
        return sweep(args.sweep, args.device)
    photos = [cv2.cvtColor(cv2.imread(str(ROOT / "examples" / n)), cv2.COLOR_BGR2RGB) for n in ("coffee.png", "astronaut.png")]
    print(f"{os.cpu_count()} cores; device {args.device}; {args.frames} frames a clip; "
          f"medians of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        for size_text in args.sizes:
            size = tuple(int(v) for v in size_text.split("x"))
            clip = write_clip(Path(tmp) / f"clip_{size_text}.mp4",
                              clip_frames(photos, size, args.frames, args.frames * 2 // 3, step=max(2, size[0] // 160)),
                              size, crf=18)
            runs: dict[float, list[tuple[float, float]]] = {0.0: [], args.smoothing: []}
            for _ in range(args.repeats):  # interleaved: both settings see the same machine load
                for s in runs:
                    runs[s].append(cli_run(clip, Path(tmp) / "out", s, args.device))
            for s, r in runs.items():
                print(f"{size_text} S={s:g}: CLI {statistics.median(x[0] for x in r):.2f} fps "
                      f"(runs {', '.join(f'{x[0]:.2f}' for x in r)}), peak RSS {max(x[1] for x in r):.0f} MiB")
            costs = stage_costs(clip, args.smoothing, args.device)
            print(f"{size_text} in-process, ms/frame (cumulative): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in costs.items() if not k.startswith("warp")))
            e0, e1 = costs["warp error S=0"], costs[f"warp error S={args.smoothing:g}"]
            print(f"{size_text} warping error: S=0 {e0:.3f}, S={args.smoothing:g} {e1:.3f}, ratio {e1 / e0:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

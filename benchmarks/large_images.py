"""Size table for the command line (a script that prints figures, not a test).

For greyscale PNG scans of several sizes it runs ``python Engine.py --input SCAN --output DIR`` in a
fresh process, several times, and prints per size: median wall time, median time with the fixed
start-up cost (a 64x64 image: imports, model load) subtracted, and peak RSS (the child's own
maximum, from wait4). ``--repo`` points at another checkout, to measure the code before a change in
the same run. A size the run refuses (over --max-megapixels) is reported with its message.

Usage:
    python benchmarks/large_images.py [--sizes 0.3 12 48 100] [--repeats 3] [--repo ../old-checkout]
    python benchmarks/large_images.py --sizes 100 --extra --max-megapixels 120
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import ROOT, grey_png  # noqa: E402


def run_once(repo: Path, image: Path, out_dir: Path, extra: list[str]) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS MiB, exit status, last stderr line) of one CLI run in a fresh process."""
    cmd = [sys.executable, str(repo / "Engine.py"), "--mode", "inference", "--input", str(image),
           "--output", str(out_dir), "--device", "cpu", *extra]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and "it/s" not in ln and "img/s" not in ln]
    return wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status), (lines[-1] if lines else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.3, 12, 48, 100], help="megapixels")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--repo", default=str(ROOT), help="checkout whose Engine.py to run")
    ap.add_argument("--scans", default=str(Path(tempfile.gettempdir()) / "colorizer-scans"),
                    help="where the synthetic scans are kept between runs")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further Engine.py arguments")
    args = ap.parse_args(argv)
    repo, scans = Path(args.repo).resolve(), Path(args.scans)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        tiny = grey_png(scans / "tiny_64.png", 64 * 64 / 1e6)
        startup = statistics.median(run_once(repo, tiny, out, args.extra)[0] for _ in range(args.repeats))
        print(f"{repo.name}: start-up (a 64x64 image) {startup:.2f} s, median of {args.repeats}")
        print("| size | wall (s) | minus start-up (s) | peak RSS (MiB) | result |")
        print("|---:|---:|---:|---:|---|")
        for mp in args.sizes:
            image = grey_png(scans / f"scan_{mp:g}mp.png", mp)
            runs = [run_once(repo, image, out, args.extra) for _ in range(args.repeats)]
            wall = statistics.median(r[0] for r in runs)
            rss = max(r[1] for r in runs)
            ok = all(r[2] == 0 for r in runs)
            note = "ok" if ok else f"exit {runs[0][2]}: {runs[0][3][:160]}"
            print(f"| {mp:g} MP | {wall:.2f} | {wall - startup:.2f} | {rss:.0f} | {note} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

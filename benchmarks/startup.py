"""Start-up of the ``colorize`` command as a user meets it (a script, not a test): whole processes, timed.

Prints the median, minimum and maximum wall time of
  * ``colorize --help``;
  * ``colorize photo.jpg --output out.png`` on a 0.3 MP photo (640x480, made here from a bundled example),
    from process start to exit: imports, input check, model load (ONNX Runtime), colourising, writing;
  * the same with a missing input (how soon a typo is reported);
Run it with the Python of the install being measured (the light install's is the one users of
``pip install .`` get); the machine should be otherwise idle, since these are wall times:

Usage:
    .venv/bin/python benchmarks/startup.py [--runs 7] [--model weights/colorizer.onnx]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wall(cmd: list[str], runs: int) -> list[float]:
    """Seconds of ``cmd`` as a whole process, ``runs`` times (after one untimed run that warms the file cache)."""
    subprocess.run(cmd, capture_output=True, cwd=ROOT)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - t)
    return times


def line(label: str, times: list[float]) -> str:
    return (f"{label:<46} median {statistics.median(times):6.3f} s   min {min(times):6.3f}   max {max(times):6.3f}"
            f"   ({len(times)} runs)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--model", default=None, help="--checkpoint to pass (default: the command's own default)")
    args = ap.parse_args()
    from PIL import Image

    engine = [sys.executable, str(ROOT / "Engine.py")]
    model = ["--checkpoint", args.model] if args.model else []
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "photo.jpg"
        Image.open(ROOT / "examples" / "chelsea_cat.png").convert("L").resize((640, 480)).save(photo, quality=92)
        has_torch = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0
        print(f"python {sys.executable} ({'with' if has_torch else 'without'} torch); photo 640x480 (0.31 MP)")
        print(line("colorize --help", wall(engine + ["--help"], args.runs)))
        print(line("colorize photo.jpg --output out.png", wall(engine + [str(photo), "--output", f"{tmp}/out.png"]
                                                             + model, args.runs)))
        print(line("colorize missing.jpg (the error)", wall(engine + [f"{tmp}/missing.jpg"], args.runs)))


if __name__ == "__main__":
    main()

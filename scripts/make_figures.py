"""Regenerate the README's pictures from model files (the shipped one, by default).

  examples: docs/examples_before_after.jpg, each bundled example (as given) beside what
            ``colorize examples`` writes for it;
  grid:     docs/val_scenes_grid.jpg, rows of grey | one column per --checkpoint | original for
            --count evenly spaced photos of a folder (default: the corpus's val_scenes/);
  video:    docs/video_strip.jpg, frames of examples/film_demo.mp4 as given, then as the command
            line writes them frame by frame (--temporal-smoothing 0) and stabilised (the default),
            decoded back from the written MP4 files.

Usage:
    python scripts/make_figures.py examples
    python scripts/make_figures.py video
    python scripts/make_figures.py grid --checkpoint runs/old_repaired.pt weights/colorizer.pt \
        --labels "old (repaired)" "new (shipped)" --folder ../shared/data/colorize-corpus/val_scenes
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from Inference import Colorizer  # noqa: E402
from Pictures import fit_height, grey_of, hstack, to_rgb8, vstack, write_image  # noqa: E402
from ImageIO import find_images, load_image  # noqa: E402


def header(labels: list[str], widths: list[int], gap: int = 4, height: int = 26) -> np.ndarray:
    """A white strip with one label centred over each column."""
    row = np.full((height, sum(widths) + gap * (len(widths) - 1), 3), 255, np.uint8)
    x = 0
    for label, w in zip(labels, widths):
        size = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)[0]
        cv2.putText(row, label, (x + max(0, (w - size[0]) // 2), 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
        x += w + gap
    return row


def examples_figure(checkpoint: Path, out: Path, height: int) -> None:
    colorizer = Colorizer.from_checkpoint(checkpoint, torch.device("cpu"))
    rows = []
    for f in find_images(ROOT / "examples"):
        img = load_image(f)
        rows.append(hstack([fit_height(to_rgb8(img), height), fit_height(colorizer.colorize([img])[0], height)]))
    write_image(out, vstack(rows))


def grid_figure(checkpoints: list[Path], labels: list[str], folder: Path, count: int, out: Path, height: int) -> None:
    colorizers = [Colorizer.from_checkpoint(c, torch.device("cpu")) for c in checkpoints]
    files = find_images(folder)
    picks = [files[round(i * (len(files) - 1) / max(1, count - 1))] for i in range(min(count, len(files)))]
    rows, widths = [], None
    for f in picks:
        img = load_image(f)
        panels = [grey_of(img)] + [c.colorize([img])[0] for c in colorizers] + [to_rgb8(img)]
        panels = [fit_height(p, height) for p in panels]
        widths = widths or [p.shape[1] for p in panels]
        rows.append(hstack(panels))
    names = ["grey input"] + labels + ["original"]
    write_image(out, vstack([header(names, widths)] + rows))


def video_figure(checkpoint: Path, out: Path, height: int, clip: Path = ROOT / "examples" / "film_demo.mp4",
                 picks: tuple[int, ...] = (0, 9, 18, 27, 28, 47)) -> None:
    import tempfile

    from References import VideoConfig
    from Video import colorize_video
    from VideoFiles import open_video

    colorizer = Colorizer.from_checkpoint(checkpoint, torch.device("cpu"))
    smoothing = VideoConfig().temporal_smoothing

    def frames(path: Path) -> list[np.ndarray]:
        return [fit_height(np.array(f), height) for i, f in enumerate(open_video(path)[1]) if i in picks]
    rows = [frames(clip)]
    with tempfile.TemporaryDirectory() as tmp:
        for s in (0.0, smoothing):
            colorize_video(colorizer, clip, Path(tmp) / f"s{s}.mp4", s, progress=False)
            rows.append(frames(Path(tmp) / f"s{s}.mp4"))
    widths = [f.shape[1] for f in rows[0]]
    labels = [f"frame {i}" for i in picks]
    names = ["input", "frame by frame (S = 0)", f"stabilised (S = {smoothing:g}, the default)"]
    parts = [header(labels, widths)]
    for name, row in zip(names, rows):
        parts += [header([name], [sum(widths) + 4 * (len(widths) - 1)], height=22), hstack(row)]
    write_image(out, vstack(parts, gap=2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("figure", choices=("examples", "grid", "video"))
    ap.add_argument("--checkpoint", nargs="+", default=[str(ROOT / "weights" / "colorizer.pt")])
    ap.add_argument("--labels", nargs="+", default=None)
    ap.add_argument("--folder", default=str(ROOT.parent / "shared" / "data" / "colorize-corpus" / "val_scenes"))
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--height", type=int, default=150)
    ap.add_argument("--output", default=None)
    args = ap.parse_args(argv)
    if args.figure == "examples":
        out = Path(args.output or ROOT / "docs" / "examples_before_after.jpg")
        examples_figure(Path(args.checkpoint[0]), out, args.height)
    elif args.figure == "video":
        out = Path(args.output or ROOT / "docs" / "video_strip.jpg")
        video_figure(Path(args.checkpoint[0]), out, args.height)
    else:
        labels = args.labels or [Path(c).name for c in args.checkpoint]
        if len(labels) != len(args.checkpoint):
            ap.error("give one --labels entry per --checkpoint")
        out = Path(args.output or ROOT / "docs" / "val_scenes_grid.jpg")
        grid_figure([Path(c) for c in args.checkpoint], labels, Path(args.folder), args.count, out, args.height)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scoring a model on a folder of colour photos, next to the grey baseline.

Owns the evaluation protocol: each colour photo is reduced to its Lab L (a = b = 0),
colourised by the model, and compared with the original (PSNR, SSIM, colourfulness;
see Metrics). The grey image itself is scored as the "grey" baseline in the same
table, so every number has something to stand against. Writes CSV (per image),
JSON (summary) and optionally a grid PNG (grey | ours | original per row).

Videos are scored for flicker instead (there is rarely a colour original to compare with): each is
colourised frame by frame and stabilised, without encoding, and the warping error of both
(Temporal.WarpingError, Lab units) and the frames per second go in one table and flicker.json.

Usage:
    rows, grid = evaluate_folder(colorizer, find_images("photos/val"), grid_height=128)
    write_reports(rows, Path("eval_out"), grid)
    failures = evaluate_videos(colorizer, [Path("film.mp4")], Path("eval_out"), smoothing=0.8)
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from FullResolution import recombine_image
from Folders import load_batches
from Inference import Colorizer
from Pictures import fit_height, grey_of, hstack, to_rgb8, vstack, write_image
from Metrics import colorfulness, psnr, ssim, summarise
from ImageIO import atomic_write
from Temporal import WarpingError, flow_grid, lab_ab
from Video import colorize_frames
from VideoFiles import VideoReadError, check_count, open_video

ORIGINAL = "original"  # the originals' name in distribution scorers


def score(pred: np.ndarray, truth: np.ndarray, method: str, name: str) -> dict:
    """One per-image row of metrics for uint8 RGB ``pred`` against ``truth``."""
    return {"file": name, "method": method, "psnr": psnr(pred, truth), "ssim": ssim(pred, truth),
            "cf": colorfulness(pred), "cf_truth": colorfulness(truth)}


def evaluate_folder(colorizer: Colorizer, files: list[Path], batch_size: int = 8, grid_height: int = 0,
                    progress: bool = True, max_pixels: int | None = None, temperature: float | None = None,
                    scorers: tuple = ()) -> tuple[list[dict], list[np.ndarray], list[tuple[Path, str]]]:
    """Score ``colorizer`` and the grey baseline on colour photos.

    Returns (per-image rows, grid rows of grey | ours | original at ``grid_height`` px
    if > 0, failures as (file, reason)). Unreadable files are reported and skipped.
    Each of ``scorers`` (FrechetDistance.VGGFrechet, InceptionScores) is given every photo as
    ``add(method, rgb)``, with the methods' names and ``ORIGINAL`` for the originals; reset them
    between folders.
    """
    rows, grid, failed = [], [], []
    bar = tqdm(total=len(files), desc="evaluating", unit="img", disable=not progress)
    for batch, bad in load_batches(files, batch_size, max_pixels):
        failed += bad
        if batch:
            ab = colorizer.ab_for([img for _, img in batch], temperature)
        for i, (f, img) in enumerate(batch):
            pred, truth, grey = recombine_image(img, ab[i]), to_rgb8(img), grey_of(img)
            rows += [score(pred, truth, colorizer.name, f.name), score(grey, truth, "grey", f.name)]
            for scorer in scorers:
                for method, im in ((ORIGINAL, truth), (colorizer.name, pred), ("grey", grey)):
                    scorer.add(method, im)
            if grid_height:
                grid.append(hstack([fit_height(im, grid_height) for im in (grey, pred, truth)]))
        bar.update(len(batch) + len(bad))
    bar.close()
    return rows, grid, failed


def add_distribution_scores(table: list[dict], scorers: tuple) -> list[dict]:
    """Add each scorer's columns for each method, measured against the originals, to its summary row:
    "fd_vgg16" (FrechetDistance.VGGFrechet), "fid" and "is" (InceptionScores). When a scorer has figures
    for the originals themselves (their Inception Score), a row for the originals is appended."""
    own: dict[str, float] = {}
    for scorer in scorers:
        for r in table:
            r.update(scorer.scores(r["method"], ORIGINAL))
        own.update(scorer.reference_scores(ORIGINAL))
    if own:
        table.append({"method": ORIGINAL, "images": table[0]["images"], **own})
    return table


def format_table(table: list[dict]) -> str:
    """The summary as an aligned text table (also valid Markdown), with FD-VGG16 / FID / IS columns when scored,
    and the hint error of the originals and of each method given colour points (GuidedEvaluate) when there are any."""
    extra = [(k, name) for k, name in (("fd_vgg16", "FD-VGG16"), ("fid", "FID"), ("is", "IS")) if k in table[0]]
    if any("hint_error" in r for r in table):
        extra += [("hint_error", "hint err"), ("hint_error_truth", "hint err orig.")]
    lines = ["| method | images | PSNR (dB) | SSIM | CF | CF originals | dCF |" + "".join(f" {n} |" for _, n in extra),
             "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(extra)]
    for r in table:
        cells = [f"{r[k]:.2f}" if k in r else "" for k, _ in extra]
        if "psnr" not in r:  # the originals' own Inception Score
            lines.append(f"| {r['method']} | {r['images']} | | | | | |" + "".join(f" {c} |" for c in cells))
            continue
        lines.append(f"| {r['method']} | {r['images']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['cf']:.2f} | "
                     f"{r['cf_truth']:.2f} | {r['delta_cf']:.2f} |" + "".join(f" {c} |" for c in cells))
    if any("hint_error" in r for r in table):
        lines.append("(hint err: mean |ab(output) - ab(point)| in Lab units inside the points' patches, full "
                     "resolution; hint err orig.: the same for the original, the patches' own spread around their mean colour)")
    if extra and extra[0][0] == "fd_vgg16":
        lines.append("(FD-VGG16: Fréchet distance between the VGG16 relu5_3 features of these photos and of the "
                     "originals; lower is closer. Not FID: compare it only within this table.)")
    return "\n".join(lines)


def write_reports(rows: list[dict], out_dir: Path, grid: list[np.ndarray] | None = None,
                  table: list[dict] | None = None) -> dict[str, Path]:
    """Write metrics.csv (per image), metrics.json (``table``, default ``summarise(rows)``) and grid.png
    (if given), atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    hinted = [k for k in ("hint_error", "hint_error_truth") if any(k in r for r in rows)]
    writer = csv.DictWriter(buf, fieldnames=["file", "method", "psnr", "ssim", "cf", "cf_truth"] + hinted)
    writer.writeheader()
    writer.writerows(rows)
    paths = {"csv": out_dir / "metrics.csv", "json": out_dir / "metrics.json"}
    atomic_write(paths["csv"], lambda tmp: Path(tmp).write_text(buf.getvalue()))
    summary = json.dumps({"summary": table or summarise(rows)}, indent=2)
    atomic_write(paths["json"], lambda tmp: Path(tmp).write_text(summary + "\n"))
    if grid:
        paths["grid"] = out_dir / "grid.png"
        write_image(paths["grid"], vstack(grid))
    return paths


def flicker(colorizer: Colorizer, src: Path, smoothing: float, batch_size: int = 8,
            max_pixels: int | None = None) -> dict:
    """Colourise ``src`` without writing it and measure the output's warping error (Temporal.WarpingError,
    Lab units) and speed: {"frames", "warping_error", "fps", "cuts"}."""
    info, frames = open_video(src, max_pixels)
    grid = flow_grid((info.height, info.width))  # the grid colorize_frames' luma is on
    meter, n, start, measuring = WarpingError(), 0, time.perf_counter(), 0.0
    with contextlib.closing(frames):
        for grey, out, _ in colorize_frames(colorizer, info, frames, smoothing, batch_size):
            t = time.perf_counter()
            meter.add(grey, lab_ab(out, grid))
            measuring += time.perf_counter() - t
            n += 1
    check_count(info, n)
    seconds = time.perf_counter() - start - measuring  # decoding and colourising; no encoding, no metric
    return {"frames": n, "warping_error": meter.value, "fps": n / seconds, "cuts": meter.cuts,
            "size": f"{info.width}x{info.height}"}


def evaluate_videos(colorizer: Colorizer, clips: list[Path], out_dir: Path, smoothing: float, batch_size: int = 8,
                    max_pixels: int | None = None) -> int:
    """Print the flicker table for ``clips`` (frame by frame against ``smoothing``) and write it to
    ``out_dir``/flicker.json; returns the number of clips that could not be read (each named on stderr)."""
    rows, failures = [], 0
    for clip in tqdm(clips, desc="measuring flicker", unit="video", leave=False):
        try:
            runs = {s: flicker(colorizer, clip, s, batch_size, max_pixels) for s in (0.0, smoothing)}
        except VideoReadError as e:
            tqdm.write(f"error: {e}", file=sys.stderr)
            failures += 1
            continue
        plain, steady = runs[0.0], runs[smoothing]
        rows.append({"video": str(clip), "frames": plain["frames"], "size": plain["size"], "cuts": plain["cuts"],
                     "smoothing": smoothing, "warping_error_frame_by_frame": plain["warping_error"],
                     "warping_error_stabilised": steady["warping_error"],
                     "ratio": steady["warping_error"] / plain["warping_error"],
                     "fps_frame_by_frame": plain["fps"], "fps_stabilised": steady["fps"]})
    if rows:
        print(format_flicker(rows))
        path = out_dir / "flicker.json"
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=2)))
        print(f"wrote {path}")
    return failures


def format_flicker(rows: list[dict]) -> str:
    """The flicker table as text: warping error in Lab units (lower = steadier) and frames per second."""
    s = rows[0]["smoothing"]
    lines = [f"{'video':<28} {'frames':>6} {'size':>10} {'cuts':>4}  {'warp err S=0':>12} {f'S={s:g}':>8} "
             f"{'ratio':>6}  {'fps S=0':>7} {f'S={s:g}':>7}"]
    for r in rows:
        lines.append(f"{Path(r['video']).name[:28]:<28} {r['frames']:>6} {r['size']:>10} {r['cuts']:>4}  "
                     f"{r['warping_error_frame_by_frame']:>12.3f} {r['warping_error_stabilised']:>8.3f} "
                     f"{r['ratio']:>6.2f}  {r['fps_frame_by_frame']:>7.1f} {r['fps_stabilised']:>7.1f}")
    return "\n".join(lines) + "\n(warping error: mean |ab(t+1) - warp(ab(t))| in Lab units over pixels the optical flow " \
        "of the input follows; pairs across a cut skipped)"


def evaluate_inputs(colorizer: Colorizer, folders: list[Path], out_root: Path, *, batch_size: int, max_pixels: int,
                    smoothing: float, grid: bool, open_scorers, hints: str | int | None = None,
                    reference: str | None = None) -> int:
    """``--mode evaluate``: one table per folder of colour photos (the model beside the grey baseline; FD-VGG16
    and, if asked for, FID/IS from ``open_scorers()``, loaded at the first folder of photos), a flicker table
    per folder of videos; CSV/JSON (and a grid with ``grid``) under ``out_root``. Returns the exit status.
    With ``hints`` (--hints N: simulated colour points per photo) or ``reference`` (--reference self|other), photos
    are scored with those hints and beside their trivial baselines instead (GuidedEvaluate)."""
    from GuidedEvaluate import evaluate_guided_folder, parse_setting
    from ImageIO import find_images, split_videos
    from Metrics import summarise

    setting = parse_setting(hints, reference)
    if setting is not None and not colorizer.guided:
        from Hints import no_hints_error
        raise no_hints_error(colorizer.name)  # before any photo is read
    failures, scorers = 0, None
    for folder in folders:
        images, clips = split_videos(find_images(folder, videos=True))
        out_dir = out_root / folder.name if len(folders) > 1 else out_root
        if clips:
            failures += evaluate_videos(colorizer, clips, out_dir, smoothing, batch_size, max_pixels)
        if not images:
            continue
        scorers = scorers or open_scorers()
        for scorer in scorers:
            scorer.reset()
        if setting is None:
            rows, grid_rows, failed = evaluate_folder(colorizer, images, batch_size, grid_height=160 if grid else 0,
                                                      max_pixels=max_pixels, scorers=scorers)
        else:
            rows, grid_rows, failed = evaluate_guided_folder(colorizer, images, [setting], max_pixels=max_pixels,
                                                             scorers=scorers, grid_height=160 if grid else 0)
        failures += len(failed)
        if not rows:
            raise ValueError(f"{folder}: no {'colour photo' if setting else 'image'} could be read")
        table = add_distribution_scores(summarise(rows), scorers) if len(rows) >= 4 else summarise(rows)
        print(f"\n{folder} ({table[0]['images']} photos)\n{format_table(table)}")
        print("wrote " + ", ".join(str(p) for p in write_reports(rows, out_dir, grid_rows, table).values()))
    if failures:
        print(f"{failures} file(s) could not be read (listed above)", file=sys.stderr)
    return 1 if failures else 0

"""Scoring a model on a folder of colour photos, next to the grey baseline.

Owns the evaluation protocol: each colour photo is reduced to its Lab L (a = b = 0),
colourised by the model, and compared with the original (PSNR, SSIM, colourfulness;
see Metrics). The grey image itself is scored as the "grey" baseline in the same
table, so every number has something to stand against. Writes CSV (per image),
JSON (summary) and optionally a grid PNG (grey | ours | original per row).

Usage:
    rows, grid = evaluate_folder(colorizer, find_images("photos/val"), grid_height=128)
    write_reports(rows, Path("eval_out"), grid)
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from FullResolution import recombine_image
from Inference import Colorizer, fit_height, grey_of, hstack, load_batches, to_rgb8, vstack, write_image
from Metrics import colorfulness, psnr, ssim, summarise
from ModelIO import atomic_write


def score(pred: np.ndarray, truth: np.ndarray, method: str, name: str) -> dict:
    """One per-image row of metrics for uint8 RGB ``pred`` against ``truth``."""
    return {"file": name, "method": method, "psnr": psnr(pred, truth), "ssim": ssim(pred, truth),
            "cf": colorfulness(pred), "cf_truth": colorfulness(truth)}


def evaluate_folder(colorizer: Colorizer, files: list[Path], batch_size: int = 8, grid_height: int = 0,
                    progress: bool = True, max_pixels: int | None = None,
                    temperature: float | None = None) -> tuple[list[dict], list[np.ndarray], list[tuple[Path, str]]]:
    """Score ``colorizer`` and the grey baseline on colour photos.

    Returns (per-image rows, grid rows of grey | ours | original at ``grid_height`` px
    if > 0, failures as (file, reason)). Unreadable files are reported and skipped.
    """
    rows, grid, failed = [], [], []
    bar = tqdm(total=len(files), desc="evaluating", unit="img", disable=not progress)
    for batch, bad in load_batches(files, batch_size, max_pixels):
        failed += bad
        if batch:
            ab = colorizer.ab_for([img for _, img in batch], temperature)
        for i, (f, img) in enumerate(batch):
            pred, truth, grey = recombine_image(img, ab[i].numpy()), to_rgb8(img), grey_of(img)
            rows += [score(pred, truth, colorizer.name, f.name), score(grey, truth, "grey", f.name)]
            if grid_height:
                grid.append(hstack([fit_height(im, grid_height) for im in (grey, pred, truth)]))
        bar.update(len(batch) + len(bad))
    bar.close()
    return rows, grid, failed


def format_table(table: list[dict]) -> str:
    """The summary as an aligned text table (also valid Markdown)."""
    lines = ["| method | images | PSNR (dB) | SSIM | CF | CF originals | dCF |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        lines.append(f"| {r['method']} | {r['images']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['cf']:.2f} | "
                     f"{r['cf_truth']:.2f} | {r['delta_cf']:.2f} |")
    return "\n".join(lines)


def write_reports(rows: list[dict], out_dir: Path, grid: list[np.ndarray] | None = None) -> dict[str, Path]:
    """Write metrics.csv (per image), metrics.json (summary) and grid.png (if given), atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["file", "method", "psnr", "ssim", "cf", "cf_truth"])
    writer.writeheader()
    writer.writerows(rows)
    paths = {"csv": out_dir / "metrics.csv", "json": out_dir / "metrics.json"}
    atomic_write(paths["csv"], lambda tmp: Path(tmp).write_text(buf.getvalue()))
    summary = json.dumps({"summary": summarise(rows)}, indent=2)
    atomic_write(paths["json"], lambda tmp: Path(tmp).write_text(summary + "\n"))
    if grid:
        paths["grid"] = out_dir / "grid.png"
        write_image(paths["grid"], vstack(grid))
    return paths

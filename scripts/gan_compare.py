"""Score several models on the same folders, with the FD-VGG16 column, and print the README's comparison table.

Each model is evaluated exactly as ``--mode evaluate`` does it (Evaluate.evaluate_folder at full resolution,
the grey baseline beside it, FD-VGG16 from the shipped model's encoder), one model in memory at a time. Writes
each model's per-photo metrics.csv under --output/<label>/<folder>/ (for scripts/paired_gain.py) and all
summaries to --output/summary.json.

Usage:
    python scripts/gan_compare.py --checkpoint weights/colorizer.pt runs/gan_patchgan/last.pt \
        --labels shipped patchgan --folders ../shared/data/colorize-corpus/val_scenes ../shared/data/colorize-corpus/val
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from Evaluate import add_distribution_scores, evaluate_folder, write_reports  # noqa: E402
from FrechetDistance import VGGFrechet, load_fd_backbone  # noqa: E402
from Inference import Colorizer  # noqa: E402
from LoadData import find_images  # noqa: E402
from Metrics import summarise  # noqa: E402
from ModelIO import atomic_write  # noqa: E402
from References import Paths  # noqa: E402


def score_model(checkpoint: Path, folders: list[Path], out: Path, backbone) -> dict[str, list[dict]]:
    """{folder name: summary table (the model's row and grey's)} for one model."""
    colorizer = Colorizer.from_checkpoint(checkpoint, torch.device("cpu"))
    tables = {}
    for folder in folders:
        fd = VGGFrechet(backbone)
        rows, _, failed = evaluate_folder(colorizer, find_images(folder), scorers=(fd,))
        if failed:
            raise ValueError(f"{folder}: {len(failed)} photo(s) could not be read")
        tables[folder.name] = add_distribution_scores(summarise(rows), (fd,))
        write_reports(rows, out / folder.name, table=tables[folder.name])
    return tables


def markdown(results: dict[str, dict[str, list[dict]]], folders: list[str]) -> str:
    """One row per model (and grey, once), each folder's PSNR | SSIM | CF | ΔCF | FD-VGG16."""
    head = "| model | " + " | ".join(f"{f} PSNR | SSIM | CF | ΔCF | FD-VGG16" for f in folders) + " |"
    lines = [head, "|---|" + "---:|" * 5 * len(folders)]

    def cells(row: dict) -> str:
        return f"{row['psnr']:.2f} | {row['ssim']:.4f} | {row['cf']:.2f} | {row['delta_cf']:.2f} | {row['fd_vgg16']:.1f}"
    for label, tables in results.items():
        lines.append(f"| {label} | " + " | ".join(cells(tables[f][0]) for f in folders) + " |")
    first = next(iter(results.values()))
    lines.append("| grey input | " + " | ".join(cells(first[f][1]) for f in folders) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", nargs="+", required=True)
    ap.add_argument("--labels", nargs="+", default=None)
    ap.add_argument("--folders", nargs="+", required=True)
    ap.add_argument("--output", default="results/gan_compare")
    args = ap.parse_args(argv)
    labels = args.labels or [Path(c).parent.name for c in args.checkpoint]
    if len(labels) != len(args.checkpoint):
        ap.error("give one --labels entry per --checkpoint")
    out, folders = Path(args.output), [Path(f) for f in args.folders]
    backbone = load_fd_backbone(None, Paths().torch_checkpoint)
    results = {}
    for label, ckpt in zip(labels, args.checkpoint):
        results[label] = score_model(Path(ckpt), folders, out / label, backbone)
        print(f"{label}: " + "; ".join(f"{f}: {t[0]['psnr']:.2f} dB, dCF {t[0]['delta_cf']:.2f}, FD {t[0]['fd_vgg16']:.1f}"
                                       for f, t in results[label].items()), flush=True)
    text = json.dumps(results, indent=2)
    atomic_write(out / "summary.json", lambda tmp: Path(tmp).write_text(text))
    print(markdown(results, [f.name for f in folders]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

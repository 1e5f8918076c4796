"""Per-photo PSNR gain of one model over another, from two ``--mode evaluate`` reports of the same folder.

Prints the mean and median gain, how many photos improve, and a bootstrap 95 % interval of the mean
gain (photos resampled with replacement), so a difference in the README's table can be weighed against
the spread between photos.

Usage:
    python scripts/paired_gain.py eval_new/val_scenes/metrics.csv eval_old/metrics.csv [--rounds 10000]
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np


def model_psnr(path: Path) -> dict[str, float]:
    """{file: PSNR} of the report's model rows (every method but the grey baseline; one model per report)."""
    rows = [r for r in csv.DictReader(path.open()) if r["method"] != "grey"]
    methods = {r["method"] for r in rows}
    if len(methods) != 1:
        raise ValueError(f"{path}: expected one model besides grey, found {sorted(methods)}")
    return {r["file"]: float(r["psnr"]) for r in rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("new", type=Path, help="metrics.csv of the model being judged")
    ap.add_argument("old", type=Path, help="metrics.csv of the model it is compared with")
    ap.add_argument("--rounds", type=int, default=10000)
    args = ap.parse_args(argv)
    new, old = model_psnr(args.new), model_psnr(args.old)
    if new.keys() != old.keys():
        print(f"error: the reports cover different photos ({len(new.keys() ^ old.keys())} not in both)", file=sys.stderr)
        return 1
    gain = np.array([new[k] - old[k] for k in sorted(new)])
    boot = np.random.default_rng(0).choice(gain, (args.rounds, len(gain))).mean(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    print(f"{len(gain)} photos: mean gain {gain.mean():+.2f} dB, median {np.median(gain):+.2f} dB, "
          f"{(gain > 0).sum()} improve; bootstrap 95% interval of the mean {low:+.2f} to {high:+.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

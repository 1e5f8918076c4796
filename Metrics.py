"""Image-quality metrics for colourisation, as the colourisation literature reports them.

Owns small pure functions on uint8 RGB arrays (H, W, 3) with values 0..255:
  * ``psnr``: peak signal-to-noise ratio over all RGB values, in dB (higher is closer);
  * ``ssim``: structural similarity on RGB (scikit-image, 7x7 window, data range 255);
  * ``colorfulness``: Hasler & Suesstrunk (2003), the |R-G|, |0.5(R+G)-B| variant used in
    colourisation tables (e.g. DDColor's): sigma_rgyb + 0.3 * mu_rgyb;
  * ``delta_cf``: |mean CF(predictions) - mean CF(originals)| (lower is better).
And ``summarise``, which turns per-image rows into the per-method table.

Usage:
    from Metrics import psnr, ssim, colorfulness
    print(psnr(pred, truth), ssim(pred, truth), colorfulness(pred))
"""
from __future__ import annotations

import math

import numpy as np


def psnr(pred: np.ndarray, truth: np.ndarray) -> float:
    """PSNR in dB between two uint8 RGB images of the same shape (inf if identical)."""
    if pred.shape != truth.shape:
        raise ValueError(f"psnr: shapes differ {pred.shape} vs {truth.shape}")
    mse = float(np.mean((pred.astype(np.float64) - truth.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def ssim(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean SSIM over the RGB channels (scikit-image defaults: 7x7 uniform window, K1=0.01, K2=0.03)."""
    from skimage.metrics import structural_similarity

    if pred.shape != truth.shape:
        raise ValueError(f"ssim: shapes differ {pred.shape} vs {truth.shape}")
    win = min(7, *pred.shape[:2])
    win -= 1 - win % 2  # odd window no larger than the image
    return float(structural_similarity(pred.astype(np.float64), truth.astype(np.float64), channel_axis=2,
                                       data_range=255.0, win_size=win))


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk colourfulness of a uint8 RGB image: 0 for grey, ~20-60 for typical photos."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg = np.abs(r - g)
    yb = np.abs(0.5 * (r + g) - b)
    return float(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))


def delta_cf(pred_cfs: list[float], truth_cfs: list[float]) -> float:
    """|mean CF of the predictions - mean CF of the originals|."""
    return abs(float(np.mean(pred_cfs)) - float(np.mean(truth_cfs)))


def summarise(rows: list[dict]) -> list[dict]:
    """Per-image rows {"method", "psnr", "ssim", "cf", "cf_truth"} -> one row per method with means and delta_cf;
    and the means of "hint_error" and "hint_error_truth" for a method whose rows all have them."""
    table = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        table.append({
            "method": method, "images": len(mine),
            "psnr": float(np.mean([r["psnr"] for r in mine])),
            "ssim": float(np.mean([r["ssim"] for r in mine])),
            "cf": float(np.mean([r["cf"] for r in mine])),
            "cf_truth": float(np.mean([r["cf_truth"] for r in mine])),
            "delta_cf": delta_cf([r["cf"] for r in mine], [r["cf_truth"] for r in mine]),
        })
        for key in ("hint_error", "hint_error_truth"):  # rows of photos given colour points (GuidedEvaluate)
            if all(key in r for r in mine):
                table[-1][key] = float(np.mean([r[key] for r in mine]))
    return table

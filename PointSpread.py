"""Colour points spread to the pixels around them: each point's correction fades with distance and stops at
lightness edges (numpy, no torch).

Owns
  * ``spread_points``: for colour points on an ab grid, each point's correction c_i (its colour minus the ab
    under it) spread to every grid pixel with weight w_i = exp(-d^2 / 2 sigma_d^2) * exp(-(L - L_i)^2 / 2
    sigma_L^2). Run on the automatic output, it is the trivial post-process a guided model must beat
    (GuidedBaselines.points_baseline);
  * ``follow_points``: the last step of the guided model's output (``Inference.Colorizer.ab_for``). The model
    carries a point's colour into the region it belongs to, but it leaves part of the point's error at the point
    itself (about 4.5 Lab units on val_scenes, against 2.9 for the photos' own patches). The remaining error is
    spread in the same way, on the model's own ab grid, with the reach chosen on val/ (scripts/tune_point_baseline.py --follow).
The spatial reach shrinks as points get denser: sigma_d = (reach) * shorter side / sqrt(N) for N points.

Usage:
    ab = follow_points(ab, grid_lightness(L, ab.shape[1:]), points, height, width)   # (2, h, w) in [-1, 1]
    ab = spread_points(ab_lab, L, points, height, width, sigma_d=0.2, sigma_l=15.0)   # Lab units
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from Hints import Point
from References import LAB

# The follow step's reach: sigma_d = FOLLOW_D * shorter side / sqrt(N), sigma_L = FOLLOW_L (Lab L units). On val/
# (scripts/tune_point_baseline.py --follow; mean PSNR over 1, 2, 5, 10, 20 and 50 points, network alone 23.20 dB)
# reach 0.25 / 0.5 / 1 / 2 over sqrt(N) with sigma_L 15 gave 23.33 / 23.44 / 23.52 / 23.50 dB. Simulated points
# are drawn from the original, so a point there also tells the whole photo's cast and a long reach pays; a user's
# point is about its object. One red point on examples/coffee.png changes 17 / 34 / 57 % of the photo by more
# than 5 Lab units beyond what the network did; 0.5 keeps most of the gain at half the reach of 1.
FOLLOW_D = 0.5
FOLLOW_L = 15.0


def spread_points(ab: np.ndarray, L: np.ndarray, points: Sequence[Point], height: int, width: int,
                  sigma_d: float, sigma_l: float) -> np.ndarray:
    """Each point's correction, spread. ab (2, h, w) and L (h, w) (Lab units) on a grid over a (height, width) image;
    points in that image's pixels. Returns ab + sum_i w_i c_i / max(1, sum_i w_i), (2, h, w) float32.

    c_i = the point's ab - ab at the grid pixel under it; w_i(p) = exp(-d^2 / 2 (sigma_d * shorter side)^2) *
    exp(-(L_p - L_i)^2 / 2 sigma_l^2) with d in image pixels. Dividing by max(1, sum w) rather than sum w: where
    points overlap their corrections are averaged, where none reaches (sum w -> 0) the input colour stays.
    """
    ab = np.asarray(ab, np.float32)
    L = np.asarray(L, np.float32)
    h, w = L.shape
    sy, sx = height / h, width / w
    ys = (np.arange(h, dtype=np.float32) + 0.5) * np.float32(sy)  # grid pixel centres, in image pixels
    xs = (np.arange(w, dtype=np.float32) + 0.5) * np.float32(sx)
    kd = np.float32(0.5 / (sigma_d * min(height, width)) ** 2)
    kl = np.float32(0.5 / sigma_l ** 2)
    num = np.zeros_like(ab)
    den = np.zeros_like(L)
    for p in points:
        gy = min(max(int((p.y + 0.5) / sy), 0), h - 1)
        gx = min(max(int((p.x + 0.5) / sx), 0), w - 1)
        c = np.asarray(p.ab, np.float32) - ab[:, gy, gx]
        wt = np.exp(-(kd * (ys - np.float32(p.y + 0.5)) ** 2)[:, None] - kd * (xs - np.float32(p.x + 0.5)) ** 2
                    - kl * (L - L[gy, gx]) ** 2)
        num += c[:, None, None] * wt
        den += wt
    return ab + num / np.maximum(den, np.float32(1.0))


def grid_lightness(L: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The network's input L (S, S) in [-1, 1] (FullResolution.working_L) -> Lab L (h, w) in [0, 100] on the
    model's ab grid of ``shape``, by area averaging: the lightness follow_points stops at, from the model's own view
    of the photo (no second pass over a large image)."""
    lab_L = np.asarray(L, np.float32) * np.float32(LAB.l_scale) + np.float32(LAB.l_center)
    return cv2.resize(lab_L, shape[::-1], interpolation=cv2.INTER_AREA) if lab_L.shape != shape else lab_L


def follow_points(ab: np.ndarray, L: np.ndarray, points: Sequence[Point], height: int, width: int,
                  reach: float = FOLLOW_D, sigma_l: float = FOLLOW_L) -> np.ndarray:
    """A guided model's output made to follow its points: ab (2, h, w) in [-1, 1] on the model's grid, L (h, w)
    Lab L in [0, 100] on the same grid, points in the pixels of the (height, width) image -> ab (2, h, w) float32
    in [-1, 1], with each point's remaining error spread (``spread_points``, sigma_d = reach / sqrt(N)).
    Without points, ab unchanged."""
    if not points:
        return np.asarray(ab, np.float32)
    scale = np.float32(LAB.ab_scale)
    out = spread_points(np.asarray(ab, np.float32) * scale, L, points, height, width,
                        reach / len(points) ** 0.5, sigma_l)
    return np.clip(out / scale, -1.0, 1.0)

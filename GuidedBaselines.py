"""The two trivial post-processes a guided model must beat, applied to the automatic output (numpy, no torch).

Owns
  * ``mean_std_transfer``: for a reference photo, the automatic ab shifted and scaled per channel so that its
    mean and standard deviation equal the reference's (Reinhard et al. 2001, in Lab); ``ab_stats`` gives a
    photo's (mean, std) from the same working-size view the model's global hint is made from;
  * ``points_baseline``: for colour points, each point's correction (its colour minus the automatic ab under it)
    spread to every pixel with weight w_i = exp(-d^2 / 2 sigma_d^2) * exp(-(L - L_i)^2 / 2 sigma_L^2), so a
    correction fades with distance and stops at lightness edges (``PointSpread.spread_points``), on a photo at up
    to ``GRID_SIDE`` pixels (the correction is smooth; ``FullResolution.recombine_image`` upsamples it).
The spatial reach shrinks as points get denser: sigma_d = SIGMA_D * shorter side / sqrt(N) for N points (their
typical spacing scales so). SIGMA_D and SIGMA_L (Lab L units) were chosen on val/ only, by mean PSNR over 1, 2, 5,
10, 20 and 50 points (scripts/tune_point_baseline.py: a fixed sigma_d of 0.05-0.4 of the shorter side, or 0.25-2
over sqrt(N), times sigma_L of 5-40 or none; 1 / sqrt(N) with sigma_L 15 won, 22.88 dB against 22.61 for the best
fixed sigma_d).

Usage:
    ab = points_baseline(img, auto_ab, points)                # (2, h, w) in [-1, 1], for recombine_image
    ab = mean_std_transfer(auto_ab * 110, *ab_stats(ref, 128)) / 110
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from Hints import Point
from PointSpread import spread_points
from References import LAB

SIGMA_D = 1.0  # a point's spatial reach: this fraction of the image's shorter side over sqrt(N) (tuned on val/)
SIGMA_L = 15.0  # lightness similarity, Lab L units (tuned on val/)
GRID_SIDE = 512  # the longer side of the grid the points baseline works on (val photos: their own size)
EPS = 1e-3  # Lab units: the least standard deviation divided by, so a flat channel gives no infinite scale


def ab_stats(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A decoded colour photo (H, W, 3) uint8/uint16 -> (mean (2,), std (2,)) of its Lab a, b (Lab units), from its
    ``size`` x ``size`` area-resized view (the view ``Hints.reference_hint`` makes the model's global hint from)."""
    from FullResolution import lab_of
    from ImageIO import to_float

    small = cv2.resize(np.ascontiguousarray(image[..., :3]), (size, size), interpolation=cv2.INTER_AREA)
    ab = lab_of(np.clip(to_float(small), 0.0, 1.0))[1:].reshape(2, -1)
    return ab.mean(axis=1), ab.std(axis=1)


def mean_std_transfer(ab: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """ab (2, ...) -> the same with each channel's mean and std set to ``mean`` (2,) and ``std`` (2,) (any units, the
    same for both): (ab - its mean) * std / its std + mean."""
    ab = np.asarray(ab, np.float32)
    flat = ab.reshape(2, -1)
    scale = np.asarray(std, np.float32) / np.maximum(flat.std(axis=1), EPS)
    shift = np.asarray(mean, np.float32) - flat.mean(axis=1) * scale
    return ab * scale.reshape((2,) + (1,) * (ab.ndim - 1)) + shift.reshape((2,) + (1,) * (ab.ndim - 1))


def grid_shape(height: int, width: int, side: int = GRID_SIDE) -> tuple[int, int]:
    """(h, w): an image's size scaled so its longer side is at most ``side`` (aspect kept, at least 1 x 1)."""
    k = min(1.0, side / max(height, width))
    return max(1, round(height * k)), max(1, round(width * k))


def grid_L(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Decoded pixels (H, W[, 3]) uint8/uint16 -> Lab L (h, w) float32 in [0, 100] on a grid of ``shape`` (area
    resize of the pixels themselves, so no full-size float copy is made)."""
    from FullResolution import lab_of
    from ImageIO import to_float

    h, w = shape
    small = image if image.shape[:2] == (h, w) else cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return lab_of(np.clip(to_float(small), 0.0, 1.0))[0]


def points_baseline(image: np.ndarray, auto_ab: np.ndarray, points: Sequence[Point], sigma_d: float | None = None,
                    sigma_l: float = SIGMA_L, side: int = GRID_SIDE) -> np.ndarray:
    """The points post-process of a photo: its decoded pixels (H, W[, 3]), the model's automatic ab (2, h, w) in
    [-1, 1] and the points (image pixels) -> ab (2, gh, gw) in [-1, 1] on a grid of longer side <= ``side``, for
    ``FullResolution.recombine_image(image, ab)``. ``sigma_d`` (fraction of the shorter side; default SIGMA_D /
    sqrt(number of points)) and ``sigma_l`` as ``spread_points``."""
    if sigma_d is None:
        sigma_d = SIGMA_D / max(1, len(points)) ** 0.5
    shape = grid_shape(image.shape[0], image.shape[1], side)
    # Half-pixel bilinear, as recombine_image upsamples (cv2 takes (2, h, w) as h x w x 2 after moving the axis).
    ab = cv2.resize(np.moveaxis(np.asarray(auto_ab, np.float32), 0, -1), shape[::-1], interpolation=cv2.INTER_LINEAR)
    ab = np.moveaxis(ab, -1, 0) * np.float32(LAB.ab_scale)
    out = spread_points(ab, grid_L(image, shape), points, image.shape[0], image.shape[1], sigma_d, sigma_l)
    return out / np.float32(LAB.ab_scale)

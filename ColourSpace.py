"""sRGB (D65) <-> CIE Lab and the gamut fit: the project's one implementation of these formulas.

Owns the sRGB transfer curve, the linear RGB <-> XYZ matrices, Lab's f and its inverse, and the gamut
fit (each colour's chroma scaled down toward grey at fixed L and hue until it is a displayable sRGB
colour), with the constants of ``References.LAB`` (scikit-image's rgb2lab/lab2rgb, which the tests
compare against). Everything else calls these: ``FullResolution`` (numpy, the light install's
full-resolution path, which keeps only lookup tables *built from* these functions) and ``LoadData``
(torch, training), whose ``rgb_to_lab`` / ``lab_to_rgb`` / ``fit_to_gamut`` are thin wrappers.

Array-generic: every function takes numpy arrays or torch tensors and returns the same kind, dtype
and device, through what both libraries share (operators, ``where``, ``stack``, ``moveaxis``,
boolean-mask indexing, ``zeros_like``); the one difference is the cube root, ``np.cbrt`` for numpy
(3.5x faster than a power) and a power of 1/3 for torch, which has no cbrt: float32 results of the
two differ by a few ulps. Why generic rather than converting tensors to numpy and back: that would
do for today's callers (CPU tensors, nothing differentiated: the Dataset's crops, Quantization's
bins, Export's reference batch, tests), but not for a tensor on a GPU or one that needs gradients
(a loss in RGB), and generic code costs nothing here: the Dataset's per-crop conversion runs at the
speed of the torch code it replaced, batches faster (benchmarks/colour_space.py).
This module imports numpy only and never torch: a tensor's own module is looked up in
``sys.modules`` (it is imported already if a tensor exists), so the light install stays torch-free.

Shapes: Lab and RGB arrays carry their three channels on ``axis`` (default -3: (..., 3, H, W), as
the network's tensors); the per-channel functions take any shape. Ranges: sRGB in [0, 1]; L in
[0, 100]; a and b about [-110, 110]; Y (relative luminance) in [0, 1]. Floats in, floats out: pass
float32 or float64 (python-float constants keep the input's precision).

Usage:
    lab = rgb_to_lab(rgb)                  # (..., 3, H, W) numpy or torch, sRGB in [0, 1] -> Lab
    rgb = lab_to_rgb(fit_to_gamut(lab))    # displayable, L and hue kept
"""
from __future__ import annotations

import sys
from types import ModuleType
from typing import Any, NamedTuple, TypeVar

import numpy as np

from References import LAB

Array = TypeVar("Array", bound=Any)  # a numpy array or a torch tensor (this module never imports torch)

GAMUT_STEPS = 12  # bisection steps on the chroma scale: the scale is found to 1/4096
GAMUT_TOL = 1e-4  # in sRGB units: a colour within [-tol, 1 + tol] per channel is in gamut
# The same test in linear RGB (the sRGB curve is monotone, so the fit needs no gamma): python floats
LINEAR_LO = -GAMUT_TOL / 12.92
LINEAR_HI = ((1 + GAMUT_TOL + 0.055) / 1.055) ** 2.4

_XYZ_FROM_RGB = tuple(tuple(float(v) for v in row) for row in LAB.xyz_from_rgb)
_RGB_FROM_XYZ = tuple(tuple(float(v) for v in row) for row in np.linalg.inv(np.array(LAB.xyz_from_rgb)))
_WHITE = tuple(float(v) for v in LAB.white)
_XYZN_FROM_RGB = tuple(tuple(v / w for v in row) for row, w in zip(_XYZ_FROM_RGB, _WHITE))  # X/Xn, Y/Yn, Z/Zn


def _ns(x: Array) -> ModuleType:
    """numpy, or torch for a torch tensor (then torch is in sys.modules already: no import here)."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(x, torch.Tensor) else np


def _channels(x: Array, axis: int) -> tuple[Array, Array, Array]:
    """The three channels of ``x`` along ``axis`` as views; a clear error for any other channel count."""
    if x.shape[axis] != 3:
        raise ValueError(f"expected 3 channels on axis {axis}, got shape {tuple(x.shape)}")
    c = _ns(x).moveaxis(x, axis, 0)
    return c[0], c[1], c[2]


def srgb_to_linear(v: Array) -> Array:
    """sRGB transfer curve inverse: sRGB values in [0, 1] (any shape) -> linear RGB in [0, 1]."""
    return _ns(v).where(v > LAB.srgb_threshold, ((v + 0.055) / 1.055) ** 2.4, v / 12.92)


def linear_to_srgb(lin: Array) -> Array:
    """sRGB transfer curve: linear RGB (any shape; negatives allowed) -> sRGB, not clipped."""
    pos = lin.clip(min=LAB.linear_threshold)  # the power branch only sees its own domain (no NaN, no bad grad)
    return _ns(lin).where(lin > LAB.linear_threshold, 1.055 * pos ** (1 / 2.4) - 0.055, 12.92 * lin)


def f_lab(t: Array) -> Array:
    """Lab's f of X/Xn, Y/Yn or Z/Zn (any shape, >= 0): the cube root above LAB.xyz_epsilon, linear below."""
    xp = _ns(t)
    root = xp.cbrt(t) if xp is np else t.clip(min=LAB.xyz_epsilon) ** (1 / 3)
    return xp.where(t > LAB.xyz_epsilon, root, LAB.xyz_kappa * t + 16 / 116)


def f_lab_inv(f: Array) -> Array:
    """Inverse of ``f_lab`` (any shape)."""
    return _ns(f).where(f > LAB.lab_f_threshold, f * f * f, (f - 16 / 116) * (1 / LAB.xyz_kappa))


def f_of_L(L: Array) -> Array:
    """f(Y) of lightness L in [0, 100] (L = 116 f(Y) - 16)."""
    return (L + 16) * (1 / 116)


def luminance(r: Array, g: Array, b: Array) -> Array:
    """Relative luminance Y in [0, 1] of linear R, G, B (any shape each)."""
    m = _XYZ_FROM_RGB[1]
    return r * m[0] + g * m[1] + b * m[2]


def rgb_to_lab(rgb: Array, axis: int = -3) -> Array:
    """sRGB in [0, 1] with its 3 channels on ``axis`` -> CIE Lab (D65), same shape: L in [0, 100], a, b
    about [-110, 110]."""
    # Whole-array calls where possible: a training crop is small, and per-call overhead is most of its cost.
    xp = _ns(rgb)
    r, g, b = _channels(srgb_to_linear(rgb), axis)
    fx, fy, fz = f_lab(xp.stack([m[0] * r + m[1] * g + m[2] * b for m in _XYZN_FROM_RGB]))
    return xp.stack((116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)), axis)


def _xz(fy: Array, a: Array, b: Array) -> tuple[Array, Array]:
    """X and Z (D65-scaled) of Lab given as f(Y), a, b. Z's f is floored at 0 (as scikit-image's lab2xyz)."""
    X = f_lab_inv(fy + a * (1 / 500)) * _WHITE[0]
    Z = f_lab_inv((fy - b * (1 / 200)).clip(min=0.0)) * _WHITE[2]
    return X, Z


def _linear(X: Array, y_terms: tuple[Array, Array, Array], Z: Array) -> list[Array]:
    """Linear R, G, B from X, Z and each channel's Y term (its matrix entry times Y, computed once)."""
    return [row[0] * X + row[2] * Z + yt for row, yt in zip(_RGB_FROM_XYZ, y_terms)]


def _linear_of(fy: Array, y_terms: tuple[Array, Array, Array], a: Array, b: Array) -> list[Array]:
    """Linear R, G, B of Lab given as f(Y), the Y terms, a, b."""
    X, Z = _xz(fy, a, b)
    return _linear(X, y_terms, Z)


def lab_to_linear(L: Array, a: Array, b: Array) -> list[Array]:
    """Lab channels (any shape each) -> [R, G, B] linear, unclipped (out-of-gamut values leave [0, 1])."""
    fy = f_of_L(L)
    Y = f_lab_inv(fy)
    return _linear_of(fy, tuple(row[1] * Y for row in _RGB_FROM_XYZ), a, b)


def lab_to_rgb(lab: Array, axis: int = -3, clip: bool = True) -> Array:
    """CIE Lab (D65) with its 3 channels on ``axis`` -> sRGB, same shape, clipped to [0, 1] per channel
    (``clip=False``: unclipped). Clipping moves L; use ``fit_to_gamut`` first to keep it."""
    rgb = _ns(lab).stack([linear_to_srgb(c) for c in lab_to_linear(*_channels(lab, axis))], axis)
    return rgb.clip(0.0, 1.0) if clip else rgb


def _in_gamut(lin: list[Array]) -> Array:
    ok = (lin[0] >= LINEAR_LO) & (lin[0] <= LINEAR_HI)
    for c in lin[1:]:
        ok &= (c >= LINEAR_LO) & (c <= LINEAR_HI)
    return ok


class GamutFit(NamedTuple):
    """What ``fit_gamut`` returns: the fitted colours in linear RGB and the chroma scale it applied."""

    linear: list  # [R, G, B] linear, each of the input's shape, in gamut within GAMUT_TOL
    bad: Any  # bool, the input's shape: the pixels that were out of gamut
    scale: Any  # (bad.sum(),) chroma scale in [0, 1) applied to each of those pixels


def fit_gamut(fy: Array, Y: Array, a: Array, b: Array, steps: int = GAMUT_STEPS) -> GamutFit:
    """Gamut fit of Lab pixels given as f(Y), Y = f_lab_inv(f(Y)), a, b (same shape each, any shape).

    Out-of-gamut pixels get their ab scaled by the largest factor (to 1 / 2**steps, by bisection over
    just those pixels) that lands them in sRGB; L and hue are kept. Y is an argument so a caller that
    has it from a table (FullResolution) skips the inverse. Returns the linear RGB of the result and,
    for those who want Lab, which pixels were scaled and by how much.
    """
    xp = _ns(fy)
    y_terms = tuple(row[1] * Y for row in _RGB_FROM_XYZ)
    lin = _linear_of(fy, y_terms, a, b)
    bad = ~_in_gamut(lin)
    if not bad.any():
        return GamutFit(lin, bad, fy[bad])
    idx = xp.where(bad)  # indices, found once: cheaper than a boolean mask for each of the 9 uses below
    fy, y_terms, a, b = fy[idx], tuple(t[idx] for t in y_terms), a[idx], b[idx]
    lo, hi = xp.zeros_like(fy), xp.ones_like(fy)
    for _ in range(steps):
        mid = (lo + hi) * 0.5
        ok = _in_gamut(_linear_of(fy, y_terms, a * mid, b * mid))
        lo, hi = xp.where(ok, mid, lo), xp.where(ok, hi, mid)
    for c, fitted in zip(lin, _linear_of(fy, y_terms, a * lo, b * lo)):
        c[idx] = fitted
    return GamutFit(lin, bad, lo)


def fit_to_gamut(lab: Array, axis: int = -3, steps: int = GAMUT_STEPS) -> Array:
    """Lab with its 3 channels on ``axis`` -> the same Lab with each out-of-gamut colour's chroma scaled
    down just enough to be a valid sRGB colour (``fit_gamut``). L is returned unchanged, bit for bit."""
    L, a, b = _channels(lab, axis)
    fy = f_of_L(L)
    fit = fit_gamut(fy, f_lab_inv(fy), a, b, steps)
    if not fit.bad.any():
        return lab
    s = _ns(lab).ones_like(a)
    s[fit.bad] = fit.scale
    return _ns(lab).stack((L, a * s, b * s), axis)

"""The full-resolution path, in strips: cost proportional to the pixels, memory bounded whatever the size.

Owns everything between a decoded image (uint8 or uint16, grey or RGB) and the colourised uint8
RGB, except the network:
  * ``working_L``: the image as the network sees it, L (1, 1, S, S) in [-1, 1]: an antialiased
    bilinear resize done as a horizontal pass per strip, then a vertical pass on the narrow result
    (Pillow's float resampler: the filter that ``LoadData.resize_to_square``'s PyTorch
    ``antialias=True`` was written to match, within 1e-5, without a full-size float copy);
  * ``lab_of``: ``ColourSpace.rgb_to_lab`` for small images, grey or RGB (the inference path's only
    Lab conversion).
  * ``recombine_image``: low-resolution ab laid over the image's own full-resolution L, strip by
    strip: bilinear upsampling (PyTorch's align_corners=False formula), the gamut fit, sRGB.
The colour formulas are ``ColourSpace``'s (the project's one implementation); this module adds only
lookup tables built from them and the strip bookkeeping.
Only the uint8 input, the uint8 output and O(``STRIP_PIXELS``) float32 buffers are ever held.
Strips are cut by rows; a row longer than ``STRIP_PIXELS`` is cut into tiles along it too, so a
39 000 000 x 1 image needs no more than a square one. numpy, Pillow and the standard library
only: this module runs in the light install (no torch).

The gamut fit (``ColourSpace.fit_gamut``) keeps L and hue and shrinks chroma by a 12-step bisection
on the scale, in linear RGB and only over the pixels of a strip that are out of gamut; a strip's
f(Y) and Y come from tables of the sRGB curve for uint8/uint16 pixels. Linear -> sRGB uint8 uses a
65536-entry table of ``ColourSpace.linear_to_srgb`` (within 0.05 of a grey level of the exact curve
before rounding).

Usage:
    L = working_L(img, 128)                     # img: (H, W) or (H, W, 3), uint8/uint16
    out = recombine_image(img, ab_small)        # ab_small: (2, h, w) float32 in [-1, 1] -> (H, W, 3) uint8
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

import ColourSpace as CS
from ImageIO import to_float
from References import LAB

STRIP_PIXELS = 1 << 20  # pixels per strip: about 60 MB of float32 buffers at most


def strips(height: int, width: int, pixels: int = STRIP_PIXELS) -> Iterator[tuple[int, int]]:
    """Row ranges [r0, r1) of about ``pixels`` pixels each covering ``height`` rows."""
    rows = max(1, pixels // max(width, 1))
    for r0 in range(0, height, rows):
        yield r0, min(height, r0 + rows)


def tiles(height: int, width: int, pixels: int = STRIP_PIXELS) -> Iterator[tuple[int, int, int, int]]:
    """Blocks (r0, r1, c0, c1) of at most about ``pixels`` pixels covering the image: whole-row strips,
    and, where one row alone is longer than ``pixels``, tiles along it."""
    cols = min(width, max(1, pixels))
    for r0, r1 in strips(height, cols, pixels):
        for c0 in range(0, width, cols):
            yield r0, r1, c0, min(width, c0 + cols)


@functools.cache
def _to_linear_lut(levels: int) -> np.ndarray:
    """Linear value of each of ``levels`` sRGB code values, float32 (computed in float64)."""
    return CS.srgb_to_linear(np.arange(levels, dtype=np.float64) / (levels - 1)).astype(np.float32)


@functools.cache
def _to_srgb8_lut() -> np.ndarray:
    """sRGB uint8 of linear values k / 65535, rounded half up."""
    srgb = CS.linear_to_srgb(np.arange(65536, dtype=np.float64) / 65535)
    return np.floor(np.clip(srgb, 0, 1) * 255 + 0.5).astype(np.uint8)


@functools.cache
def _grey_luts(levels: int) -> tuple[np.ndarray, np.ndarray]:
    Y = _to_linear_lut(levels)  # a grey pixel's R = G = B, and the Y weights sum to 1
    return CS.f_lab(Y), Y


def image_fy(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(f(Y), Y) of uint8/uint16 pixels (rows, W[, 3]): float32 (rows, W) each. Grey images use tables only."""
    levels = 65536 if img.dtype == np.uint16 else 256
    if img.ndim == 2:
        fy_lut, y_lut = _grey_luts(levels)
        return fy_lut[img], y_lut[img]
    lut = _to_linear_lut(levels)
    Y = CS.luminance(lut[img[..., 0]], lut[img[..., 1]], lut[img[..., 2]])
    return CS.f_lab(Y), Y


def linear_to_srgb8(lin: np.ndarray, out: np.ndarray) -> None:
    """Linear values (any shape, in gamut to within ColourSpace.GAMUT_TOL) -> sRGB uint8 written into ``out``
    (same shape; may be a strided view, e.g. one channel of the output image), clipped to [0, 1] first."""
    idx = (np.clip(lin, 0.0, 1.0) * np.float32(65535.0) + np.float32(0.5)).astype(np.uint16)
    out[...] = _to_srgb8_lut()[idx]


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's bilinear sampling along one axis (align_corners=False): (i0, i1, weight of i1)."""
    scale = np.float32(n_in / n_out)
    src = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + 0.5) - 0.5, 0.0)
    i0 = src.astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def threads() -> int:
    """Strips processed at once: one per core this process may use (numpy releases the GIL in its loops)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def recombine(fy_of: Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray]], height: int, width: int,
              ab_small: np.ndarray | None, out: np.ndarray | None = None, bgr: bool = False) -> np.ndarray:
    """Full-resolution lightness, given block by block by ``fy_of(r0, r1, c0, c1)`` -> (f(Y), Y), each
    (rows, cols) float32, plus low-resolution ab (2, h, w) in [-1, 1] (None: grey) -> uint8 RGB (H, W, 3)
    with that L.

    ``out`` may be a preallocated (H, W, 3) uint8 array to fill; ``bgr`` writes OpenCV's channel order.
    """
    out = np.empty((height, width, 3), np.uint8) if out is None else out
    if ab_small is not None:
        ab_small = np.asarray(ab_small, np.float32) * np.float32(LAB.ab_scale)
        x0, x1, wx = _axis_weights(ab_small.shape[2], width)
        y0, y1, wy = _axis_weights(ab_small.shape[1], height)

    def block(rect: tuple[int, int, int, int]) -> None:
        r0, r1, c0, c1 = rect
        fy, Y = (v.reshape(-1) for v in fy_of(r0, r1, c0, c1))
        if ab_small is None:
            a = b = np.zeros_like(fy)
        else:
            top, bot = ab_small[:, y0[r0:r1]], ab_small[:, y1[r0:r1]]
            small = top + (bot - top) * wy[r0:r1, None]  # (2, rows, w_small)
            left = small[:, :, x0[c0:c1]]
            ab = left + (small[:, :, x1[c0:c1]] - left) * wx[c0:c1]  # (2, rows, cols)
            a, b = ab[0].reshape(-1), ab[1].reshape(-1)
        lin = CS.fit_gamut(fy, Y, a, b).linear
        for i, channel in enumerate(lin[::-1] if bgr else lin):
            linear_to_srgb8(channel.reshape(r1 - r0, c1 - c0), out[r0:r1, c0:c1, i])

    # Blocks of STRIP_PIXELS / threads pixels, so the float buffers stay O(STRIP_PIXELS) in all.
    n = threads()
    parts = list(tiles(height, width, max(1, STRIP_PIXELS // n)))
    if n == 1 or len(parts) == 1:
        for rect in parts:
            block(rect)
    else:
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(block, parts))
    return out


def recombine_image(img: np.ndarray, ab_small: np.ndarray | None, out: np.ndarray | None = None,
                    bgr: bool = False) -> np.ndarray:
    """An image's own L (uint8/uint16, (H, W) or (H, W, 3)) plus ab (2, h, w) in [-1, 1] -> uint8 RGB (H, W, 3)
    (BGR with ``bgr``)."""
    return recombine(lambda r0, r1, c0, c1: image_fy(img[r0:r1, c0:c1]), img.shape[0], img.shape[1], ab_small, out,
                     bgr)


def recombine_L(L: np.ndarray, ab_small: np.ndarray | None) -> np.ndarray:
    """Lab L (H, W) float in [0, 100] plus ab (2, h, w) in [-1, 1] (None: grey) -> uint8 RGB (H, W, 3)."""
    def fy_of(r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        fy = CS.f_of_L(np.asarray(L[r0:r1, c0:c1], np.float32))
        return fy, CS.f_lab_inv(fy)
    return recombine(fy_of, L.shape[0], L.shape[1], ab_small)


def _resize_aa(channel: np.ndarray, width: int, height: int) -> np.ndarray:
    """float32 (h, w) -> (height, width): antialiased bilinear (triangle filter widened by the scale, as
    PyTorch's ``antialias=True``), in double precision; one pass when only one axis changes."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(channel, np.float32)).resize((width, height),
                                                                                        Image.Resampling.BILINEAR))


def working_L(img: np.ndarray, size: int) -> np.ndarray:
    """The network's view of an image: L (1, 1, size, size) float32 in [-1, 1] (whole image, aspect not kept).

    Antialiased bilinear RGB resize (as LoadData.resize_to_square), separably: each strip is resized
    horizontally to ``size`` columns, then the (H, size) result vertically; then Lab L.
    """
    h, w = img.shape[:2]
    channels = 1 if img.ndim == 2 else 3
    narrow = np.empty((channels, h, size), np.float32)
    for r0, r1 in strips(h, w, STRIP_PIXELS // 4):
        part = to_float(img[r0:r1])
        for c in range(channels):
            narrow[c, r0:r1] = _resize_aa(part if channels == 1 else part[..., c], size, r1 - r0)
    rgb = np.stack([_resize_aa(narrow[c], size, size) for c in range(channels)])
    L = lab_of(np.clip(rgb, 0.0, 1.0), channels_first=True)[0]
    return ((L - np.float32(LAB.l_center)) / np.float32(LAB.l_scale))[None, None]


def lab_of(rgb: np.ndarray, channels_first: bool = False) -> np.ndarray:
    """sRGB float in [0, 1] (H, W, 3), (3, H, W) with ``channels_first``, or grey (H, W) / (1, H, W) ->
    CIE Lab (D65) (3, H, W) float32: L in [0, 100], a and b about [-110, 110] (``ColourSpace.rgb_to_lab``)."""
    x = np.asarray(rgb, np.float32)
    if x.ndim == 2:
        x = x[None]
    elif not channels_first:
        x = np.moveaxis(x, -1, 0)
    if x.shape[0] == 1:
        x = np.broadcast_to(x, (3,) + x.shape[1:])
    return CS.rgb_to_lab(x, axis=0)

"""uint8 pictures: decoded pixels made RGB, grey or tested for colour, laid out in grids, encoded and written.

Owns the small picture helpers that inference, evaluation, the web app and training's run folders share:
``as_pixels``, ``to_rgb8``, ``is_colour`` and ``grey_of`` (decoded pixels), ``fit_height``, ``hstack`` and
``vstack`` (comparison grids on white), ``encode_image`` (bytes for the web) and ``write_image`` (atomic: a
temporary file, then a rename, so a crash or a full disk never leaves half an image). numpy and OpenCV only.

Usage:
    write_image(Path("compare.png"), hstack([grey_of(img), colourised, to_rgb8(img)]))
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from FullResolution import lab_of, recombine_image
from ImageIO import as_rgb, atomic_write, to_float


def as_pixels(img: np.ndarray) -> np.ndarray:
    """uint8/uint16 pixels as they are; float images in [0, 1] as uint16 (keeps their precision)."""
    if img.dtype in (np.uint8, np.uint16):
        return img
    return (np.clip(img, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)


def to_rgb8(img: np.ndarray) -> np.ndarray:
    """Decoded pixels (uint8/uint16, grey or RGB) as uint8 RGB (H, W, 3)."""
    img = as_rgb(img)
    return img if img.dtype == np.uint8 else (img.astype(np.float32) * (255 / 65535) + 0.5).astype(np.uint8)


def is_colour(img: np.ndarray, threshold: float = 3.0) -> bool:
    """True when decoded pixels have real colour (mean Lab chroma above ``threshold``)."""
    if img.ndim == 2:
        return False
    lab = lab_of(to_float(img[::4, ::4]))
    return float(np.sqrt(lab[1] ** 2 + lab[2] ** 2).mean()) > threshold


def grey_of(img: np.ndarray) -> np.ndarray:
    """The Lab-L greyscale version of decoded pixels, as uint8 RGB (a = b = 0)."""
    return recombine_image(as_pixels(img), None)


def fit_height(image: np.ndarray, height: int) -> np.ndarray:
    """uint8 (H, W, 3) resized to (height, W * height / H, 3), aspect kept (area filter)."""
    if image.shape[0] == height:
        return image
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def hstack(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Side by side on white, each uint8 (H, W_i, 3) scaled to the tallest height."""
    h = max(im.shape[0] for im in images)
    parts = []
    for im in images:
        parts += [fit_height(im, h), np.full((h, gap, 3), 255, np.uint8)]
    return np.concatenate(parts[:-1], axis=1)


def vstack(rows: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Rows (H_i, W_i, 3) uint8 stacked on white, left-aligned."""
    w = max(r.shape[1] for r in rows)
    parts = []
    for r in rows:
        pad = np.full((r.shape[0], w - r.shape[1], 3), 255, np.uint8)
        parts += [np.concatenate((r, pad), axis=1), np.full((gap, w, 3), 255, np.uint8)]
    return np.concatenate(parts[:-1], axis=0)


def _encode_params(suffix: str, quality: int) -> list[int]:
    return [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix.lower() in (".jpg", ".jpeg") else []


def encode_image(image: np.ndarray, suffix: str, quality: int = 95, bgr: bool = False) -> bytes:
    """Encode uint8 RGB (H, W, 3) (BGR with ``bgr``: no copy) as the format of ``suffix`` (.png, .jpg, .webp);
    ValueError if it cannot."""
    ok, buf = cv2.imencode(suffix.lower(), image if bgr else cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                           _encode_params(suffix, quality))
    if not ok:
        raise ValueError(f"could not encode image as {suffix}")
    return buf.tobytes()


def write_image(path: Path, image: np.ndarray, quality: int = 95, bgr: bool = False) -> None:
    """Write uint8 RGB (H, W, 3) (or BGR, OpenCV's order, with ``bgr``: no copy) atomically; format from the
    suffix. Encoded in memory first, so a full disk is reported as such (ImageIO.DiskFullError), not as a
    failure to encode."""
    data = encode_image(image, path.suffix, quality, bgr)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
    atomic_write(path, write)


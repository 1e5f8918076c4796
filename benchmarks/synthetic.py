"""Synthetic large greyscale scans for the size benchmarks: a bundled photo upscaled, with film-like grain.

Usage:
    path = grey_png(Path("scan48.png"), 48)   # about 48 MP, 4:3
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def grey_png(path: Path, megapixels: float, source: Path = ROOT / "examples" / "astronaut.png", grain: int = 6) -> Path:
    """Write (once) a greyscale PNG of about ``megapixels`` MP at 4:3 made from ``source``, with uniform grain of
    +-``grain`` levels (0: none, a smaller file); returns ``path``."""
    w = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    h = int(round(megapixels * 1e6 / w))
    if path.exists():
        return path
    grey = cv2.imread(str(source), cv2.IMREAD_GRAYSCALE)
    big = cv2.resize(grey, (w, h), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(0)
    for r0 in range(0, h if grain else 0, 1024):  # grain in strips: the noise array would otherwise be 8 bytes per pixel
        part = big[r0:r0 + 1024].astype(np.int16) + rng.integers(-grain, grain + 1, big[r0:r0 + 1024].shape, dtype=np.int16)
        big[r0:r0 + 1024] = np.clip(part, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), big)
    return path

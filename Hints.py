"""User colour hints without torch: colour points and reference photos, turned into the guided model's inputs.

Owns
  * ``Point`` (one colour point, in input pixels) and ``Guidance`` (a photo's points and reference);
  * ``local_map``: points -> the (3, S, S) hint map at the working size (the same layout as training's
    simulated hints, HintSampling.py): a * m, b * m in network units (ab / 110) and the mask m;
  * ``ab_histogram`` / ``reference_hint``: a reference photo -> the (Q + 1,) global hint, a distribution over
    the model's ab bins plus a "given" flag;
  * ``simulate_points``: N points drawn from a ground-truth photo, as evaluation's simulated user;
  * the hint file format (``read_hints``, ``parse_hints``, ``check_points``, ``hints_to_json``).

A point's patch at the working size is the box of working pixels whose centres lie within its radius of it
(the radius mapped through the resize, each axis on its own since the working size is square), and always
holds the pixel under the point. Overlapping patches average their colours.

Usage:
    guidance = Guidance(points=(Point(120, 45, hex_to_ab("#a83a2c")),), reference=None)
    local = local_map(guidance.points, height, width, 128)        # (3, 128, 128) float32
    global_ = reference_hint(reference_pixels, bins, 128)        # (Q + 1,) float32
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from References import LAB

GREY_CHROMA = 3.0  # mean chroma (Lab units) under which a reference photo has no colour to give


class HintError(ValueError):
    """A hint file, a point or a reference photo that cannot be used; the message is one line naming the file."""


def no_hints_error(name: str) -> HintError:
    """The error for hints given to a model trained without them."""
    return HintError(f"{name}: this model takes no colour points or reference photo (it was trained without "
                     "them); use the guided release, weights/colorizer.onnx")


@dataclass(frozen=True)
class Point:
    """One colour point: (x, y) in input pixels (0-based, from the top-left, after EXIF rotation), the colour's
    Lab a, b (about [-110, 110]; lightness comes from the photo), the radius in input pixels (None: the
    default, ``default_radius``) and, in a film, the 0-based frame it belongs to (None: every frame)."""

    x: float
    y: float
    ab: tuple[float, float]
    radius: float | None = None
    frame: int | None = None
    color: str = ""  # the "#rrggbb" it was given as, kept for messages and for writing it back


@dataclass(frozen=True)
class Guidance:
    """What a user gave for one photo: points, and a reference photo's global hint (``reference_hint``) or None."""

    points: tuple[Point, ...] = ()
    reference: np.ndarray | None = None

    def __bool__(self) -> bool:
        return bool(self.points) or self.reference is not None


def default_radius(width: int, height: int) -> float:
    """A point's radius when none is given: 1 % of the shorter side, at least 1 pixel."""
    return max(1.0, 0.01 * min(width, height))


def hex_to_ab(color: str) -> tuple[float, float]:
    """"#rrggbb" (sRGB) -> its CIE Lab (a, b). Raises ValueError for anything else."""
    from FullResolution import lab_of

    if not (isinstance(color, str) and len(color) == 7 and color[0] == "#"):
        raise ValueError(f"colour {color!r} is not #rrggbb")
    try:
        rgb = [int(color[i:i + 2], 16) / 255.0 for i in (1, 3, 5)]
    except ValueError:
        raise ValueError(f"colour {color!r} is not #rrggbb") from None
    lab = lab_of(np.array(rgb, np.float32).reshape(1, 1, 3))
    return float(lab[1, 0, 0]), float(lab[2, 0, 0])


def _span(centre: float, half: float, n: int) -> tuple[int, int]:
    """Working pixels [lo, hi) whose centres lie within ``half`` of ``centre`` (working units), at least the one
    under the centre, clipped to [0, n)."""
    under = min(max(int(np.floor(centre)), 0), n - 1)
    lo = min(int(np.ceil(centre - half - 0.5)), under)
    hi = max(int(np.floor(centre + half - 0.5)) + 1, under + 1)
    return max(lo, 0), min(hi, n)


def local_map(points: tuple[Point, ...] | list[Point], height: int, width: int, size: int) -> np.ndarray:
    """Points on a (height, width) image -> the hint map at the working size, (3, size, size) float32.

    Channels: a * m and b * m in network units ([-1, 1]) and the mask m in {0, 1}. All zero without points.
    """
    total = np.zeros((3, size, size), np.float64)
    sx, sy = size / width, size / height
    default = default_radius(width, height)
    for p in points:
        r = default if p.radius is None else p.radius
        y0, y1 = _span((p.y + 0.5) * sy, r * sy, size)
        x0, x1 = _span((p.x + 0.5) * sx, r * sx, size)
        total[0, y0:y1, x0:x1] += p.ab[0] / LAB.ab_scale
        total[1, y0:y1, x0:x1] += p.ab[1] / LAB.ab_scale
        total[2, y0:y1, x0:x1] += 1.0
    count = total[2]
    out = np.zeros((3, size, size), np.float32)
    hit = count > 0
    out[0][hit] = total[0][hit] / count[hit]
    out[1][hit] = total[1][hit] / count[hit]
    out[2][hit] = 1.0
    return out


def ab_histogram(ab: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """ab (2, h, w) in Lab units -> the global hint (Q + 1,) float32: the share of pixels whose nearest bin is
    each of ``bins`` (Q, 2), then the "given" flag 1."""
    flat = np.asarray(ab, np.float32).reshape(2, -1).T  # (N, 2)
    b = np.asarray(bins, np.float32)
    d = (flat ** 2).sum(1)[:, None] - 2.0 * flat @ b.T + (b ** 2).sum(1)[None]
    counts = np.bincount(d.argmin(1), minlength=len(b)).astype(np.float32)
    return np.concatenate([counts / max(counts.sum(), 1.0), [1.0]]).astype(np.float32)


def reference_hint(image: np.ndarray, bins: np.ndarray, size: int, name: str = "reference") -> np.ndarray:
    """A decoded reference photo (H, W, 3) uint8/uint16 -> its global hint (Q + 1,), from its colours at the
    working size. Raises HintError when it is grey: it has no colour to give."""
    import cv2

    from FullResolution import lab_of
    from ImageIO import to_float

    if image.ndim != 3:
        raise HintError(f"{name}: the reference is a grey image; it has no colour to give")
    small = cv2.resize(to_float(image)[..., :3], (size, size), interpolation=cv2.INTER_AREA)
    lab = lab_of(np.clip(small, 0.0, 1.0))
    chroma = float(np.hypot(lab[1], lab[2]).mean())
    if chroma < GREY_CHROMA:
        raise HintError(f"{name}: the reference is grey (mean chroma {chroma:.1f}); it has no colour to give")
    return ab_histogram(lab[1:], bins)


def simulate_points(ab: np.ndarray, n: int, rng: np.random.Generator, radius: float | None = None) -> list[Point]:
    """``n`` points a user might give, drawn from a ground-truth photo's ab (2, H, W) in Lab units: uniform
    positions, each coloured with the mean ab of its patch (``radius`` input pixels, default ``default_radius``)."""
    _, h, w = ab.shape
    r = default_radius(w, h) if radius is None else radius
    points = []
    for _ in range(n):
        x, y = int(rng.integers(w)), int(rng.integers(h))
        y0, y1 = _span(y + 0.5, r, h)
        x0, x1 = _span(x + 0.5, r, w)
        a, b = ab[:, y0:y1, x0:x1].reshape(2, -1).mean(axis=1)
        points.append(Point(float(x), float(y), (float(a), float(b)), radius=radius))
    return points

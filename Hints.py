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
    points = read_hints("hints/photo.json"); check_points(points, width, height, "hints/photo.json")
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from References import LAB

GREY_CHROMA = 3.0  # mean chroma (Lab units) under which a reference photo has no colour to give


REFERENCE_SHRINK = 4  # a reference's sides are cut to 4 x the working size before its colours are counted


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
    half = min(half, 2.0 * n)  # reaches past the whole side already; a larger one would overflow int()
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
    image = shrink_reference(image, size)  # no full-size float copy of a big photo
    small = cv2.resize(to_float(image)[..., :3], (size, size), interpolation=cv2.INTER_AREA)
    lab = lab_of(np.clip(small, 0.0, 1.0))
    chroma = float(np.hypot(lab[1], lab[2]).mean())
    if chroma < GREY_CHROMA:
        raise HintError(f"{name}: the reference is grey (mean chroma {chroma:.1f}); it has no colour to give")
    return ab_histogram(lab[1:], bins)


def shrink_reference(img: np.ndarray, size: int) -> np.ndarray:
    """A decoded reference (H, W[, 3]) uint8/uint16 -> each side at most REFERENCE_SHRINK x ``size``, area-averaged
    in its own integer type. reference_hint area-averages it to size x size: averaging 4 x 4 blocks of area
    averages is the area average itself (up to a rounding of 1/2 level), and the float copy it makes of a
    large photo (about 24 bytes a pixel: 1 GB for 40 MP) becomes one of 512 x 512 pixels."""
    import cv2

    side = REFERENCE_SHRINK * size
    if img.shape[0] <= side and img.shape[1] <= side:
        return img
    return cv2.resize(img, (min(img.shape[1], side), min(img.shape[0], side)), interpolation=cv2.INTER_AREA)


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


# ----------------------------------------------------------------------------- the hint file format
# {"points": [{"x": 120, "y": 45, "color": "#a83a2c", "radius": 3, "frame": 0}]}; radius and frame optional.

MAX_POINTS = 10_000
MAX_RADIUS = 100_000.0  # pixels: past any photo's side; a larger radius is a mistake, and would overflow
MAX_HINT_BYTES = 4 << 20  # 10 000 points take about 0.7 MB even pretty-printed; beyond this a file is a mistake
POINT_KEYS = ("x", "y", "color", "radius", "frame")
_HEX = re.compile(r"#[0-9a-fA-F]{6}")


def read_hints(path: str | Path) -> list[Point]:
    """A hint file -> its points (see ``parse_hints``); reads at most ``MAX_HINT_BYTES``. HintError for an
    unreadable, oversized or malformed file, naming it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_HINT_BYTES + 1)
    except FileNotFoundError:
        raise HintError(f"{path}: no such hint file") from None
    except OSError as e:
        raise HintError(f"{path}: cannot read the hint file ({e.strerror or e})") from None
    if len(data) > MAX_HINT_BYTES:
        raise HintError(f"{path}: hint file over {MAX_HINT_BYTES >> 20} MB; at most {MAX_POINTS} points are allowed")
    return parse_hints(data, str(path))


def parse_hints(text: str | bytes, source: str) -> list[Point]:
    """The hint format (UTF-8 JSON) -> points, in file order, unchecked against any image size (``check_points``).

    ``x``, ``y``: numbers, input pixels (0-based, from the top-left, after EXIF rotation); ``color``: "#rrggbb"
    (sRGB; only its chroma is used); ``radius``: a number > 0 in input pixels (absent or null: ``default_radius``);
    ``frame``: a whole number >= 0, the film frame (absent or null: every frame). Raises HintError, one line that
    names ``source`` and the entry (``points[3]``), for anything else.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")  # a byte-order mark (Windows editors) is not an error
        except UnicodeDecodeError as e:
            raise HintError(f"{source}: not UTF-8 text (byte {e.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise HintError(f"{source}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:  # arrays nested thousands deep
        raise HintError(f"{source}: not valid JSON (nested too deeply)") from None
    except ValueError as e:  # a number of thousands of digits
        raise HintError(f"{source}: not valid JSON ({str(e).splitlines()[0][:80]})") from None
    if not isinstance(data, dict):
        raise HintError(f'{source}: expected an object {{"points": [...]}}, not {_kind(data)}')
    for key in data:
        if key != "points":
            raise HintError(f'{source}: unknown key {key!r} (the file holds only "points")')
    points = data.get("points")
    if not isinstance(points, list):
        raise HintError(f'{source}: "points" must be a list of points, not {_kind(points)}' if "points" in data
                        else f'{source}: no "points" list')
    if len(points) > MAX_POINTS:
        raise HintError(f"{source}: {len(points)} points; at most {MAX_POINTS} are allowed")
    return [_point(entry, f"{source}: points[{i}]") for i, entry in enumerate(points)]


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(value), "a number")


def _number(entry: dict, key: str, where: str) -> float:
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):  # bool is an int to Python, not to a user
        raise HintError(f"{where}: {key} must be a number, not {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer with hundreds of digits
        number = math.inf
    if not math.isfinite(number):
        raise HintError(f"{where}: {key} must be a finite number")
    return number


def _point(entry: object, where: str) -> Point:
    """One entry of "points" -> a Point; HintError naming ``where`` (``file: points[i]``)."""
    if not isinstance(entry, dict):
        raise HintError(f'{where}: expected an object like {{"x": 120, "y": 45, "color": "#a83a2c"}}, '
                        f"not {_kind(entry)}")
    for key in entry:
        if key not in POINT_KEYS:
            raise HintError(f"{where}: unknown key {key!r} (a point has {', '.join(POINT_KEYS)})")
    for key in ("x", "y", "color"):
        if key not in entry:
            raise HintError(f"{where}: missing {key!r}")
    x, y = _number(entry, "x", where), _number(entry, "y", where)
    color = entry["color"]
    if not (isinstance(color, str) and _HEX.fullmatch(color)):
        raise HintError(f"{where}: color {color!r} is not #rrggbb")
    radius = None if entry.get("radius") is None else _number(entry, "radius", where)
    if radius is not None and not 0 < radius <= MAX_RADIUS:
        raise HintError(f"{where}: radius {radius:g} must be above 0 and at most {MAX_RADIUS:g} pixels")
    frame = entry.get("frame")
    if frame is not None and (isinstance(frame, bool) or not isinstance(frame, int) or frame < 0):
        raise HintError(f"{where}: frame {json.dumps(frame)} is not a whole number >= 0")
    return Point(x, y, hex_to_ab(color), radius, frame, color)


def check_points(points: list[Point] | tuple[Point, ...], width: int, height: int, source: str,
                 frames: int | None = None) -> None:
    """HintError (one line naming ``source`` and the entry) for the first point outside a ``width`` x ``height``
    image (0 <= x < width, 0 <= y < height), with a radius <= 0, or, given the film's ``frames`` (None or 0:
    unknown, not checked), with a ``frame`` at or beyond its end."""
    if len(points) > MAX_POINTS:
        raise HintError(f"{source}: {len(points)} points; at most {MAX_POINTS} are allowed")
    for i, p in enumerate(points):
        where = f"{source}: points[{i}]"
        for name, value, size in (("x", p.x, width), ("y", p.y, height)):
            if not 0 <= value < size:
                raise HintError(f"{where}: {name} {value:g} is outside the {width}x{height} image "
                                f"(0 <= {name} < {size})")
        if p.radius is not None and not p.radius > 0:
            raise HintError(f"{where}: radius {p.radius:g} must be above 0")
        if frames and p.frame is not None and not 0 <= p.frame < frames:
            raise HintError(f"{where}: frame {p.frame} is beyond the film's end (it has {frames} frames, "
                            f"0 to {frames - 1})")


def hints_to_json(points: list[Point] | tuple[Point, ...]) -> dict:
    """Points -> the hint format (``parse_hints`` reads it back to the same points). Whole coordinates are written
    as integers; radius and frame only when set. A point made from ab alone (``simulate_points``) is written
    with an sRGB colour of that chroma (``ab_to_hex``), which reads back to about the same ab."""
    out = []
    for p in points:
        entry: dict = {"x": _plain(p.x), "y": _plain(p.y), "color": p.color or ab_to_hex(p.ab)}
        if p.radius is not None:
            entry["radius"] = _plain(p.radius)
        if p.frame is not None:
            entry["frame"] = int(p.frame)
        out.append(entry)
    return {"points": out}


def _plain(v: float) -> int | float:
    return int(v) if float(v).is_integer() else float(v)


def ab_to_hex(ab: tuple[float, float]) -> str:
    """Lab (a, b) -> "#rrggbb": the colour of that chroma at the lightness (20 to 90) where it lies inside the sRGB
    gamut, or nearest to it (then clipped into it)."""
    import ColourSpace

    best, excess = np.zeros(3), np.inf
    for L in sorted(np.arange(20.0, 91.0, 2.5), key=lambda v: abs(v - 55.0)):  # mid-lightness first
        lin = np.array([float(c) for c in ColourSpace.lab_to_linear(np.float64(L), np.float64(ab[0]),
                                                                     np.float64(ab[1]))])
        out = max(0.0, float(-lin.min()), float(lin.max() - 1.0))
        if out < excess:
            best, excess = lin, out
        if out == 0.0:
            break
    srgb = ColourSpace.linear_to_srgb(np.clip(best, 0.0, 1.0))
    return "#" + "".join(f"{int(round(float(c) * 255)):02x}" for c in srgb)

"""Scoring a guided model with simulated users, beside the two trivial post-processes it must beat.

Owns the protocol of ``--mode evaluate --hints N --reference self|other`` and of scripts/guided_table.py:
  * a simulated user: N colour points drawn from each photo's ground truth (``Hints.simulate_points``, default
    radius) with a generator seeded by the photo's file name, so every row and every run sees the same points
    (and the first 10 of 20 points are the 10 points); a reference photo that is the photo itself ("self") or the
    next colour photo of the folder in sorted order ("other", a fixed derangement);
  * the model run on them exactly as the command line runs it (``Colorizer.ab_for(..., guidance=...)``, then
    ``FullResolution.recombine_image``), and the baselines of GuidedBaselines applied to its automatic output;
  * per-image rows scored as Evaluate scores them (PSNR, SSIM, CF), plus for point rows the "hint error": the mean
    |ab(output) - ab(point)| (Euclidean, Lab units) over each point's patch at full resolution, beside the same
    figure for the original (the patch's own spread around its mean colour: the floor).
Grey photos are left out (no colour to simulate from or to compare with), each named once; with reference rows so
are photos too grey to be a reference (Hints.reference_hint), so that every row is over the same photos.

Usage:
    rows, grid, failed = evaluate_guided_folder(colorizer, files, [Setting(points=10), Setting(reference="self")])
    print(format_table(summarise(rows)))
"""
from __future__ import annotations

import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from Evaluate import ORIGINAL, score
from FullResolution import lab_of, recombine_image
from GuidedBaselines import ab_stats, mean_std_transfer, points_baseline
from Hints import Guidance, HintError, Point, _span as patch_span, default_radius, no_hints_error, simulate_points
from ImageIO import ImageReadError, load_image, to_float
from Folders import load_batches
from Inference import Colorizer
from Pictures import fit_height, grey_of, hstack, is_colour, to_rgb8
from References import LAB

MAX_POINTS = 10_000  # as many as a hint file may hold
REFERENCES = ("self", "other")


@dataclass(frozen=True)
class Setting:
    """One simulated user: ``points`` colour points per photo and/or a reference photo ("self", "other" or None)."""

    points: int = 0
    reference: str | None = None

    @property
    def label(self) -> str:
        """"10 points", "reference self", "10 points + reference other"."""
        parts = ([f"{self.points} point{'s' * (self.points != 1)}"] if self.points else []) + \
            ([f"reference {self.reference}"] if self.reference else [])
        return " + ".join(parts)

    @property
    def baseline(self) -> str:
        """The post-process that stands beside this setting's model row."""
        return "+".join((["transfer"] if self.reference else []) + (["spread"] if self.points else []))


def parse_setting(hints: str | int | None, reference: str | None) -> Setting | None:
    """``--mode evaluate``'s --hints (a count of simulated points per photo) and --reference (self or other) ->
    the Setting, or None when neither is given. ValueError (one line) for anything else."""
    n = 0
    if hints not in (None, ""):
        try:
            n = int(hints)
        except ValueError:
            n = -1
        if not 0 <= n <= MAX_POINTS:
            raise ValueError(f"--hints in evaluate mode is the number of colour points to simulate per photo, "
                             f"0 to {MAX_POINTS} (e.g. --hints 10), not {hints!r}")
    if reference not in (None, "") and reference not in REFERENCES:
        raise ValueError(f"--reference in evaluate mode is 'self' (each photo is its own reference) or 'other' "
                         f"(the next photo of its folder), not {reference!r}")
    if not n and not reference:
        return None
    return Setting(n, reference or None)


class TruthAB:
    """A photo's Lab ab as a (2, H, W) array computed only where it is read: ``Hints.simulate_points`` reads one
    patch per point, so a large photo needs no full-size float copy."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self.shape = (2,) + image.shape[:2]

    def __getitem__(self, key: tuple) -> np.ndarray:
        _, ys, xs = key
        return lab_of(to_float(self.image[ys, xs]))[1:]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:  # a whole-array read still gives the right values
        return np.asarray(self[:, :, :], dtype)


def photo_points(image: np.ndarray, name: str, n: int) -> tuple[Point, ...]:
    """``n`` simulated points for a photo (decoded pixels), the same for every run: the generator is seeded by
    ``name`` (the file name), and the first k of n points are the k points."""
    rng = np.random.default_rng(zlib.crc32(name.encode("utf-8")))
    return tuple(simulate_points(TruthAB(image), n, rng))


def hint_error(rgb: np.ndarray, points: Sequence[Point]) -> float:
    """Mean over ``points`` of the mean Euclidean |ab(rgb) - ab(point)| (Lab units) over the point's patch (the
    pixels within its radius, as ``Hints.simulate_points`` averages them) in uint8 RGB (H, W, 3)."""
    h, w = rgb.shape[:2]
    errors = []
    for p in points:
        r = default_radius(w, h) if p.radius is None else p.radius
        y0, y1 = patch_span(p.y + 0.5, r, h)
        x0, x1 = patch_span(p.x + 0.5, r, w)
        ab = lab_of(to_float(rgb[y0:y1, x0:x1]))[1:]
        errors.append(float(np.hypot(ab[0] - p.ab[0], ab[1] - p.ab[1]).mean()))
    return float(np.mean(errors)) if errors else float("nan")


@dataclass(frozen=True)
class Reference:
    """A reference photo as each side uses it: the model's global hint (Q + 1,) and ab (mean, std) in Lab units."""

    name: str
    hint: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def read_references(colorizer: Colorizer, files: Sequence[Path], max_pixels: int | None) -> list[Reference | None]:
    """Each file as a reference (None for a grey or unreadable one: the scoring pass names those)."""
    found: list[Reference | None] = []
    for f in files:
        try:
            image = load_image(f, max_pixels=max_pixels)
            hint = colorizer.reference_hint(image, f.name)
        except (ImageReadError, HintError):
            found.append(None)
            continue
        found.append(Reference(f.name, hint, *ab_stats(image, colorizer.cfg.image_size)))
    return found


def pick_reference(refs: Sequence[Reference | None], i: int, mode: str) -> Reference | None:
    """Photo ``i``'s reference: itself ("self"), or the next colour photo after it in order, wrapping ("other")."""
    if mode == "self":
        return refs[i]
    return next((refs[j % len(refs)] for j in range(i + 1, i + len(refs)) if refs[j % len(refs)] is not None), None)


def baseline_ab(image: np.ndarray, auto: np.ndarray, points: Sequence[Point], ref: Reference | None) -> np.ndarray:
    """The trivial post-process of the automatic ab (2, h, w) in [-1, 1]: the reference's mean/std transfer, then
    the points' spread corrections; -> ab in [-1, 1] for recombine_image."""
    ab = auto
    if ref is not None:
        ab = mean_std_transfer(auto * np.float32(LAB.ab_scale), ref.mean, ref.std) / np.float32(LAB.ab_scale)
    return points_baseline(image, ab, points) if points else ab


Sink = Callable[[str, np.ndarray], None]  # (method, uint8 RGB) for each image scored, ORIGINAL for the truth


def photo_outputs(colorizer: Colorizer, image: np.ndarray, name: str, settings: Sequence[Setting],
                  refs: dict[str, Reference | None], temperature: float | None = None
                  ) -> Iterator[tuple[str, np.ndarray, tuple[Point, ...]]]:
    """(method, uint8 RGB (H, W, 3), its points) for grey, automatic, then per setting the model and its baseline,
    one at a time (a big photo's outputs are never all held). All the model's outputs come from one forward pass."""
    plans = [(s, photo_points(image, name, s.points) if s.points else (), refs.get(s.reference)) for s in settings]
    guidance = [None] + [Guidance(points=pts, reference=None if ref is None else ref.hint) for _, pts, ref in plans]
    abs_ = colorizer.ab_for([image] * len(guidance), temperature, guidance)
    auto = abs_[0]
    yield "grey", grey_of(image), ()
    yield colorizer.name, recombine_image(image, auto), ()
    for (s, pts, ref), ab in zip(plans, abs_[1:]):
        yield f"{colorizer.name} + {s.label}", recombine_image(image, ab), pts
        yield f"{s.baseline} + {s.label}", recombine_image(image, baseline_ab(image, auto, pts, ref)), pts


def evaluate_photo(colorizer: Colorizer, image: np.ndarray, name: str, settings: Sequence[Setting],
                   refs: dict[str, Reference | None], temperature: float | None = None,
                   sink: Sink | None = None) -> list[dict]:
    """One photo's rows (``photo_outputs``' order), each image also given to ``sink`` and then the original."""
    truth = to_rgb8(image)
    rows = []
    for method, rgb, pts in photo_outputs(colorizer, image, name, settings, refs, temperature):
        row = score(rgb, truth, method, name)
        if pts:
            row.update(hint_error=hint_error(rgb, pts), hint_error_truth=hint_error(truth, pts))
        rows.append(row)
        if sink:
            sink(method, rgb)
    if sink:
        sink(ORIGINAL, truth)
    return rows


def grid_sink(scorers: tuple, grid_height: int, panels: list[np.ndarray]) -> Sink:
    """A sink that gives every image to ``scorers`` and keeps, at ``grid_height`` px (if > 0), the grid's panels:
    grey, automatic, the model's outputs and the original (not the baselines)."""
    def sink(method: str, rgb: np.ndarray) -> None:
        for scorer in scorers:
            scorer.add(method, rgb)
        if grid_height and not method.startswith(("transfer", "spread")):
            panels.append(fit_height(rgb, grid_height))
    return sink


def evaluate_guided_folder(colorizer: Colorizer, files: list[Path], settings: Sequence[Setting], *,
                           max_pixels: int | None = None, temperature: float | None = None, progress: bool = True,
                           scorers: tuple = (), grid_height: int = 0
                           ) -> tuple[list[dict], list[np.ndarray], list[tuple[Path, str]]]:
    """Score ``colorizer`` under each of ``settings`` on colour photos, beside grey, its automatic output and the
    baselines. Returns (per-image rows, grid rows of grey | automatic | each model output | original at
    ``grid_height`` px if > 0, unreadable files as (file, reason)). ``scorers`` get every image (Evaluate)."""
    if not colorizer.guided:
        raise no_hints_error(colorizer.name)
    modes = sorted({s.reference for s in settings} - {None})
    refs = read_references(colorizer, files, max_pixels) if modes else []
    if "other" in modes and sum(r is not None for r in refs) < 2:
        raise ValueError(f"--reference other needs two colour photos in a folder; {len(files)} file(s) given, "
                         f"{sum(r is not None for r in refs)} in colour")
    index = {f: i for i, f in enumerate(files)}
    rows, grid, failed = [], [], []
    bar = tqdm(total=len(files), desc="evaluating hints", unit="img", disable=not progress)
    for batch, bad in load_batches(files, 1, max_pixels):
        failed += bad
        for f, image in batch:
            mine = {m: pick_reference(refs, index[f], m) for m in modes}
            if not is_colour(image) or None in mine.values():  # None: too little colour to be a reference
                why = "no colour to simulate hints from" if not is_colour(image) else "too grey to be its own reference"
                tqdm.write(f"{f}: left out ({why})", file=sys.stderr)
                continue
            panels: list[np.ndarray] = []
            rows += evaluate_photo(colorizer, image, f.name, settings, mine, temperature,
                                   grid_sink(scorers, grid_height, panels))
            if panels:
                grid.append(hstack(panels))
        bar.update(len(batch) + len(bad))
    bar.close()
    return rows, grid, failed

"""How often the page's suggested colours hold the true colour, beside two trivial suggestions, on colour photos.

For each photo of a folder (colour photos: the truth is their own colour), N points are simulated as evaluation
simulates them (GuidedEvaluate.photo_points: seeded positions, each point's true colour the mean ab of its
patch). At each point the suggestions (Suggestions.suggest_colours over Colorizer.distribution) are scored:
  * hit@1 / hit@5: the true ab lies within --tolerance Lab units (Euclidean, in the ab plane) of the first
    swatch / of one of the (up to 5) swatches;
  * alone: nothing else given (the first click); given the others: the other N - 1 points given, as the page
    asks after several clicks.
Beside them, two suggestions that need no distribution:
  * the automatic colour: the model's own colour at the point (one swatch, what the page shows without points);
  * a fixed palette: the 5 commonest colour families of all the folder's photos pooled (the same greedy families
    over the same bins; it has seen every photo's truth, which flatters it).

Usage:
    python scripts/suggestion_quality.py ../shared/data/colorize-corpus/val_scenes [--points 10] [--tolerance 10]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from GuidedEvaluate import photo_points  # noqa: E402
from Hints import Guidance  # noqa: E402
from ImageIO import find_images, load_image  # noqa: E402
from Inference import Colorizer  # noqa: E402
from Pictures import is_colour  # noqa: E402
from References import LAB, Paths  # noqa: E402
from Suggestions import lightness_at, modes, suggest_colours  # noqa: E402


def hits(truth: tuple[float, float], swatches: list[tuple[float, float]], tolerance: float) -> tuple[bool, bool]:
    """(the first swatch within ``tolerance`` of ``truth``, any of them within it)."""
    d = [float(np.hypot(truth[0] - a, truth[1] - b)) for a, b in swatches]
    return bool(d) and d[0] <= tolerance, any(v <= tolerance for v in d)


def automatic_at(ab: np.ndarray, x: float, y: float, width: int, height: int) -> tuple[float, float]:
    """The model's own ab (2, h, w) in [-1, 1] at input pixel (x, y), in Lab units."""
    h, w = ab.shape[1:]
    cx, cy = min(int((x + 0.5) * w / width), w - 1), min(int((y + 0.5) * h / height), h - 1)
    return float(ab[0, cy, cx] * LAB.ab_scale), float(ab[1, cy, cx] * LAB.ab_scale)


def score_photo(colorizer: Colorizer, image: np.ndarray, points: tuple, tolerance: float) -> dict[str, list]:
    """Per-point hit pairs of each method at ``points`` (GuidedEvaluate.photo_points) on one colour photo."""
    grey_h, grey_w = image.shape[:2]
    probs = colorizer.distribution([image])[0]
    ab = colorizer.ab_for([image])[0]
    out: dict[str, list] = {"alone": [], "given the others": [], "automatic colour": []}
    for i, p in enumerate(points):
        light = lightness_at(image, p.x, p.y)
        alone = suggest_colours(probs, colorizer.bins, p.x, p.y, grey_w, grey_h, light)
        out["alone"].append(hits(p.ab, [tuple(s["ab"]) for s in alone], tolerance))
        others = Guidance(points=tuple(q for j, q in enumerate(points) if j != i))
        given = suggest_colours(colorizer.distribution([image], [others])[0], colorizer.bins, p.x, p.y, grey_w,
                                grey_h, light)
        out["given the others"].append(hits(p.ab, [tuple(s["ab"]) for s in given], tolerance))
        auto = automatic_at(ab, p.x, p.y, grey_w, grey_h)
        out["automatic colour"].append(hits(p.ab, [auto], tolerance))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--checkpoint", default=str(Paths().default_checkpoint))
    ap.add_argument("--points", type=int, default=10, help="simulated points per photo")
    ap.add_argument("--tolerance", type=float, default=10.0, help="Lab units in the ab plane")
    ap.add_argument("--limit", type=int, default=0, help="only the first N photos (0: all)")
    args = ap.parse_args(argv)
    colorizer = Colorizer.from_checkpoint(args.checkpoint)
    files = find_images(args.folder)[:args.limit or None]
    results: dict[str, list] = {}
    truths, pooled = [], np.zeros(len(colorizer.bins))
    for path in tqdm(files, desc="photos"):
        image = load_image(path)
        if not is_colour(image):
            continue
        points = photo_points(image, path.name, args.points)
        for k, v in score_photo(colorizer, image, points, args.tolerance).items():
            results.setdefault(k, []).extend(v)
        pooled += colorizer.reference_hint(image)[:-1]  # the photo's colour distribution over the bins
        truths.extend(p.ab for p in points)
    palette = [(a, b) for _, a, b in modes(pooled / pooled.sum(), colorizer.bins.astype(np.float64))[:5]]
    results["fixed palette (5 commonest)"] = [hits(t, palette, args.tolerance) for t in truths]
    print(f"{len(truths)} points on {len(truths) // args.points} photos of {args.folder}, hit = the true ab within "
          f"{args.tolerance:g} Lab units")
    print("| suggestion | hit@1 | hit@5 |\n|---|---:|---:|")
    for name, pairs in results.items():
        h1, h5 = np.mean([p[0] for p in pairs]), np.mean([p[1] for p in pairs])
        five = "" if name == "automatic colour" else f"{100 * h5:.0f} %"
        print(f"| {name} | {100 * h1:.0f} % | {five or '(one swatch)'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Choose the points baseline's sigma_d and sigma_L (GuidedBaselines.SIGMA_D, SIGMA_L) on a folder: val/ only;
with --follow, the guided model's own spread instead (PointSpread.FOLLOW_D, FOLLOW_L).

For every photo the model's automatic ab is computed once; then for each (sigma_d, sigma_L) of a small grid and
each number of simulated points (the evaluation's own points, GuidedEvaluate.photo_points), the spread output is
recombined at full resolution and scored by PSNR. Prints mean PSNR per pair and per N, and the pair with the best
mean over the N (each N weighted equally). Needs no guided model: the baseline post-processes automatic colour.
With --follow the spread starts from the guided model's hinted output (its network alone) on the model's own ab
grid, as Colorizer.ab_for runs it; only the sigma_d / sqrt(N) values apply.

Usage:
    python scripts/tune_point_baseline.py ../shared/data/colorize-corpus/val --checkpoint weights/colorizer.onnx
    python scripts/tune_point_baseline.py ../shared/data/colorize-corpus/val --follow --fixed "" \
        --per-sqrt-n 0.25,0.5,1,2 --sigmas-l 8,15,30
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from FullResolution import recombine_image, working_L  # noqa: E402
from GuidedBaselines import grid_L, grid_shape  # noqa: E402
from Hints import Guidance  # noqa: E402
from PointSpread import follow_points, grid_lightness, spread_points  # noqa: E402
from GuidedEvaluate import photo_points  # noqa: E402
from ImageIO import find_images, load_image  # noqa: E402
from Inference import Colorizer  # noqa: E402
from Pictures import is_colour, to_rgb8  # noqa: E402
from Metrics import psnr  # noqa: E402
from References import LAB, Paths  # noqa: E402

# sigma_d as a fraction of the shorter side: fixed, or divided by sqrt(N) (the spacing of N points shrinks so)
FIXED = "0.05,0.1,0.2,0.4"
PER_SQRT_N = "0.25,0.5,0.7,1"
SIGMAS_L = "5,10,20,40,1e6"  # Lab L units; 1e6: no lightness term
COUNTS = (1, 2, 5, 10, 20, 50)


def floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def photo_scores(colorizer: Colorizer, path: Path, sigmas_d: tuple, sigmas_l: tuple, follow: bool = False
                 ) -> dict[tuple[tuple[float, bool], float, int], float] | None:
    """PSNR of the spread output for every (sigma_d, sigma_L, N) on one photo; None for a grey one. ``follow``:
    spread the guided network's hinted output instead of the automatic one."""
    image = load_image(path)
    if not is_colour(image):
        return None
    truth, (H, W) = to_rgb8(image), image.shape[:2]
    points = photo_points(image, path.name, max(COUNTS))
    out = {}
    if follow:  # the guided network's own output for each N (one forward pass), spread as Colorizer.ab_for does
        L = working_L(image, colorizer.cfg.image_size)[0, 0]
        outputs = colorizer.ab_for([image] * len(COUNTS), guidance=[Guidance(points=points[:n]) for n in COUNTS])
        grid = grid_lightness(L, outputs.shape[-2:])
        for n, hinted in zip(COUNTS, outputs):
            for sd in sigmas_d:
                for sl in sigmas_l:
                    ab_n = follow_points(hinted, grid, points[:n], H, W, reach=sd[0], sigma_l=sl)
                    out[sd, sl, n] = psnr(recombine_image(image, ab_n), truth)
        return out
    auto = colorizer.ab_for([image])[0]
    shape = grid_shape(H, W)
    ab = np.moveaxis(cv2.resize(np.moveaxis(auto, 0, -1), shape[::-1], interpolation=cv2.INTER_LINEAR), -1, 0)
    ab, L = ab * np.float32(LAB.ab_scale), grid_L(image, shape)
    for sd in sigmas_d:
        for sl in sigmas_l:
            for n in COUNTS:
                sigma = sd[0] / np.sqrt(n) if sd[1] else sd[0]
                spread = spread_points(ab, L, points[:n], H, W, sigma, sl) / np.float32(LAB.ab_scale)
                out[sd, sl, n] = psnr(recombine_image(image, spread), truth)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--checkpoint", type=Path, default=Paths().default_checkpoint)
    ap.add_argument("--limit", type=int, default=0, help="only the first N photos (a quick look)")
    ap.add_argument("--json", type=Path, help="also write every mean PSNR here")
    ap.add_argument("--fixed", default=FIXED, help=f"sigma_d values, fractions of the shorter side (default {FIXED})")
    ap.add_argument("--per-sqrt-n", default=PER_SQRT_N,
                    help=f"sigma_d values divided by sqrt(N) (default {PER_SQRT_N})")
    ap.add_argument("--follow", action="store_true",
                    help="tune the guided model's own spread (PointSpread.follow_points) rather than the baseline")
    ap.add_argument("--sigmas-l", default=SIGMAS_L, help=f"sigma_L values, Lab L units (default {SIGMAS_L})")
    args = ap.parse_args(argv)
    sigmas_d = tuple((v, False) for v in floats(args.fixed) if not args.follow) + \
        tuple((v, True) for v in floats(args.per_sqrt_n))
    sigmas_l = floats(args.sigmas_l)
    colorizer = Colorizer.from_checkpoint(args.checkpoint)
    colorizer.obey_points = not args.follow  # --follow starts from the network alone, then spreads as ab_for does
    files = find_images(args.folder)[:args.limit or None]
    scores = (photo_scores(colorizer, f, sigmas_d, sigmas_l, args.follow) for f in tqdm(files, unit="img"))
    per_photo = [s for s in scores if s is not None]
    mean = {k: float(np.mean([s[k] for s in per_photo])) for k in per_photo[0]}
    what = "the guided output with its points' errors spread" if args.follow else "the spread output"
    print(f"{args.folder}: {len(per_photo)} colour photos, {colorizer.name}; mean PSNR (dB) of {what}")
    print("| sigma_d | sigma_L | " + " | ".join(f"{n} pts" for n in COUNTS) + " | mean |")
    print("|---:|---:|" + "---:|" * (len(COUNTS) + 1))
    overall = {}
    for sd in sigmas_d:
        for sl in sigmas_l:
            row = [mean[sd, sl, n] for n in COUNTS]
            overall[sd, sl] = float(np.mean(row))
            name = f"{sd[0]:g}{' / sqrt(N)' if sd[1] else ''} | {'none' if sl >= 1e6 else f'{sl:g}'}"
            print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in row) + f" | {overall[sd, sl]:.3f} |")
    best = max(overall, key=overall.get)
    print(f"best over all N: sigma_d = {best[0]}, sigma_L = {best[1]:g} ({overall[best]:.3f} dB)")
    for n in COUNTS:
        b = max(((sd, sl) for sd in sigmas_d for sl in sigmas_l), key=lambda k: mean[k[0], k[1], n])
        print(f"  best for {n} points: sigma_d = {b[0]}, sigma_L = {b[1]:g} ({mean[b[0], b[1], n]:.2f} dB)")
    if args.json:
        args.json.write_text(json.dumps([{"sigma_d": k[0][0], "per_sqrt_n": k[0][1], "sigma_L": k[1], "points": k[2],
                                          "psnr": v} for k, v in mean.items()], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

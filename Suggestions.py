"""Suggested colours for a point: the few colours the model thinks likely there, as swatches a person can pick.

Owns ``suggest_colours``: the model's colour distribution (Colorizer.distribution, softmax over its ab bins)
around a point -> its top modes, each as "#rrggbb" at the photo's own lightness there with the probability of
that colour family. Families are found greedily: the most likely bin claims its 8 neighbours on the bins' square
lattice (similar colours), then the most likely bin left does, and so on; a family's probability is the sum of
its bins', and its colour their probability-weighted mean ab (between bin centres where the model hesitates
between two). NumPy and OpenCV (through FullResolution), no torch.

As in Zhang et al. (SIGGRAPH 2017), the distribution is the one given the points already placed, so a
suggestion follows the user's other choices.

Usage:
    probs = colorizer.distribution([img], guidance)[0]                    # (Q, h, w)
    swatches = suggest_colours(probs, colorizer.bins, x, y, width, height, lightness_at(img, x, y))
    # [{"color": "#563d32", "hint": "#9a7e71", "p": 0.41, "ab": [a, b]}, ...], most likely first: show "color",
    # give "hint" as the point's colour (the family's own chroma)
"""
from __future__ import annotations

import numpy as np

import ColourSpace
from FullResolution import lab_of
from Hints import ab_to_hex

TOP = 5            # swatches offered at most
MIN_P = 0.03       # a family less likely than this is not offered (the first always is)
WINDOW = 1         # cells averaged each side of the point's cell on the distribution's grid: 3 x 3


def point_distribution(probs: np.ndarray, x: float, y: float, width: int, height: int) -> np.ndarray:
    """The distribution (Q, h, w) averaged over the 3 x 3 cells around input pixel (x, y) of a width x height
    photo -> (Q,), summing to 1. One cell is about 1/64 of the photo: its neighbours steady a point on an edge."""
    q, h, w = probs.shape
    cx = min(max(int((x + 0.5) * w / width), 0), w - 1)
    cy = min(max(int((y + 0.5) * h / height), 0), h - 1)
    patch = probs[:, max(cy - WINDOW, 0):cy + WINDOW + 1, max(cx - WINDOW, 0):cx + WINDOW + 1]
    p = patch.reshape(q, -1).mean(axis=1).astype(np.float64)
    return p / max(p.sum(), 1e-12)


def modes(p: np.ndarray, bins: np.ndarray) -> list[tuple[float, float, float]]:
    """A distribution (Q,) over ``bins`` (Q, 2), Lab ab on a square lattice -> its colour families as
    (probability, a, b), most likely first. Greedy: the most likely bin not yet taken claims itself and its
    untaken 8 neighbours; so families differ by at least two bin steps and their probabilities add to 1."""
    step = float(np.min(np.diff(np.unique(bins[:, 0])))) if len(np.unique(bins[:, 0])) > 1 else 1.0
    near = np.abs(bins[:, None, :] - bins[None, :, :]).max(axis=2) <= step * 1.01  # (Q, Q): itself + 8 neighbours
    free = p.astype(np.float64).copy()
    found = []
    for i in np.argsort(-p):
        if free[i] <= 0:
            continue  # claimed by a more likely neighbour
        family = np.flatnonzero(near[i] & (free > 0))
        mass = float(free[family].sum())
        a, b = (free[family, None] * bins[family]).sum(axis=0) / max(mass, 1e-12)
        found.append((mass, float(a), float(b)))
        free[family] = 0.0
    return sorted(found, key=lambda m: -m[0])


def lab_to_hex(L: float, a: float, b: float) -> str:
    """Lab -> "#rrggbb": the chroma is shrunk (hue and lightness kept) until the colour lies in the sRGB gamut."""
    for scale in np.linspace(1.0, 0.0, 41):
        lin = np.array([float(c) for c in ColourSpace.lab_to_linear(np.float64(L), np.float64(a * scale),
                                                                     np.float64(b * scale))])
        if lin.min() >= -1e-6 and lin.max() <= 1 + 1e-6:
            break
    srgb = ColourSpace.linear_to_srgb(np.clip(lin, 0.0, 1.0))
    return "#" + "".join(f"{int(round(float(c) * 255)):02x}" for c in srgb)


def lightness_at(img: np.ndarray, x: float, y: float, radius: int = 2) -> float:
    """The mean Lab lightness (0-100) of a decoded photo (uint8/uint16, grey or RGB) around input pixel (x, y)."""
    h, w = img.shape[:2]
    xi, yi = min(max(int(x), 0), w - 1), min(max(int(y), 0), h - 1)
    patch = img[max(yi - radius, 0):yi + radius + 1, max(xi - radius, 0):xi + radius + 1]
    scale = 65535.0 if patch.dtype == np.uint16 else 255.0
    rgb = patch.astype(np.float32) / scale
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    return float(lab_of(rgb[..., :3])[0].mean())


def suggest_colours(probs: np.ndarray, bins: np.ndarray, x: float, y: float, width: int, height: int,
                    lightness: float, top: int = TOP) -> list[dict]:
    """The model's distribution (Q, h, w) over ``bins`` (Q, 2), at input pixel (x, y) of a width x height photo
    whose lightness there is ``lightness`` (0-100) -> up to ``top`` swatches [{"color": "#rrggbb", "hint":
    "#rrggbb", "p": 0.41, "ab": [a, b]}], most likely first; families under MIN_P are left out, except the first.
    "color" shows the family at the photo's lightness (its chroma shrunk into the gamut, to nothing on black);
    "hint" is the colour to give as the point's: its chroma is the family's own (Hints.ab_to_hex), since only a
    point's chroma is used and the shown one may have lost it."""
    found = modes(point_distribution(probs, x, y, width, height), np.asarray(bins, np.float64))
    out = []
    for mass, a, b in found[:top]:
        if out and mass < MIN_P:
            break
        out.append({"color": lab_to_hex(lightness, a, b), "hint": ab_to_hex((a, b)), "p": round(mass, 3),
                    "ab": [round(a, 1), round(b, 1)]})
    return out

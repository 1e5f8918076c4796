"""Colour that stays put from frame to frame: optical flow on the input's luminance, a running ab
estimate carried along it, scene-cut resets, and the warping-error measure of flicker.

Everything here works on small frames, the *flow grid*: a frame scaled so that its long side is
``FLOW_SIDE`` pixels, aspect kept. The network's ab is resampled onto that grid, stabilised there,
and only then laid over each frame's full-resolution L (FullResolution.recombine_image), so L is
never touched and the cost does not grow with the frame size.

  * ``Stabiliser``: per frame, the running ab estimate is warped into the new frame by dense flow
    (OpenCV's DIS) computed from the new frame back to the previous one, and blended with the new
    prediction, ``ab = S * warped + (1 - S) * predicted``, only where a forward-backward check says
    the flow can be trusted (elsewhere: occlusions, pixels entering the frame, the prediction
    alone). At a scene cut the estimate is reset to the new prediction. Under a user's colour
    points (``given``) the new prediction is taken as it is, and carried on from there.
  * Brightness flicker and grain are the norm in old film, so flow and cut tests see each frame's
    luminance normalised to zero mean and unit spread (``normalised``): a frame that is only darker
    is not a new scene.
  * ``Motion`` / ``Motions``: one frame's flow from the previous frame (both ways, with the check), computed
    once and shared: Video.py computes a batch's motions before the forward pass, since FilmPoints.py needs
    them to place the colour points, and hands each to the stabiliser.
  * ``WarpingError``: mean |ab(t+1) - warp(ab(t))| over the pixels the flow follows (Lab units,
    the Euclidean distance in the ab plane), pairs across a cut left out. Its flow is Farneback's,
    not the stabiliser's DIS, so the stabiliser is not graded by its own flow field.

Usage:
    grid = flow_grid(frame.shape[:2])
    stab = Stabiliser(strength=0.8)
    ab_stable = stab(luminance(frame, grid), ab_on_grid)      # ab (2, h, w), any units
    motions = Motions(); motion = motions(grey)  # None on the first frame; then stab(grey, ab, motion=motion)
    meter = WarpingError(); meter.add(luminance(frame, grid), lab_ab(out_frame, grid)); meter.value
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FLOW_SIDE = 256  # long side of the flow grid: DIS costs about 1 ms a pair here at 256 x 144
HIST_BINS = 32
CUT_HISTOGRAM = 0.35  # total-variation distance of normalised-luminance histograms that marks a cut
CUT_TRACKED = 0.35  # ... or a pair in which fewer than this share of pixels pass the flow check


def flow_grid(shape: tuple[int, int], side: int = FLOW_SIDE) -> tuple[int, int]:
    """(height, width) of a frame of ``shape`` (H, W) scaled so its long side is ``side`` (never enlarged)."""
    h, w = shape[:2]
    scale = min(1.0, side / max(h, w))
    return max(8, round(h * scale)), max(8, round(w * scale))


def luminance(frame: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """A decoded frame, uint8 (H, W) or (H, W, 3) RGB -> its luma (Rec. 601) on the grid, float32 (h, w) in [0, 255]."""
    small = cv2.resize(frame, (grid[1], grid[0]), interpolation=cv2.INTER_AREA)
    if small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    return small.astype(np.float32)


def lab_ab(frame: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """A colour frame, uint8 RGB (H, W, 3) -> its Lab ab on the grid, float32 (2, h, w) in Lab units."""
    small = cv2.resize(frame, (grid[1], grid[0]), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return np.ascontiguousarray(cv2.cvtColor(small, cv2.COLOR_RGB2Lab)[..., 1:].transpose(2, 0, 1))


def normalised(grey: np.ndarray) -> np.ndarray:
    """Luminance (h, w) with its mean and spread removed, as uint8 (128 + 40 z): blind to global
    brightness and contrast changes (flicker, fades), which flow and cut tests must ignore."""
    z = (grey - grey.mean()) / max(float(grey.std()), 1.0)
    return np.clip(128.0 + 40.0 * z, 0, 255).astype(np.uint8)


def histogram_distance(a: np.ndarray, b: np.ndarray, bins: int = HIST_BINS) -> float:
    """Total-variation distance in [0, 1] between the histograms of two uint8 images (0 = same)."""
    ha = np.bincount(a.ravel() >> (8 - int(np.log2(bins))), minlength=bins) / a.size
    hb = np.bincount(b.ravel() >> (8 - int(np.log2(bins))), minlength=bins) / b.size
    return 0.5 * float(np.abs(ha - hb).sum())


EVERYWHERE = (slice(None), slice(None))


def _sample_maps(flow: np.ndarray, where: tuple[slice, slice] = EVERYWHERE) -> tuple[np.ndarray, np.ndarray]:
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32)[where[1]], np.arange(h, dtype=np.float32)[where[0]])
    return gx + flow[where][..., 0], gy + flow[where][..., 1]


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` (C, h, w) or (h, w) at x + flow(x): the image as seen from the frame the flow
    starts in. flow: (h, w, 2) float32, pixels, (dx, dy). Bilinear, edges repeated."""
    mx, my = _sample_maps(flow)
    sample = lambda ch: cv2.remap(ch, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return sample(image) if image.ndim == 2 else np.stack([sample(ch) for ch in image])


def trusted(back: np.ndarray, fwd: np.ndarray, where: tuple[slice, slice] = EVERYWHERE) -> np.ndarray:
    """Forward-backward check (Sundaram et al. 2010): bool (h, w), True where following ``back``
    (frame t -> t-1) and then ``fwd`` (t-1 -> t) returns close to the start and stays inside the
    frame. False marks occlusions, pixels entering the frame and flow that cannot be trusted.
    ``where`` (rows, columns): only that window of the grid (the result has its shape), as the
    colour points need (FilmPoints.py): a point's few cells cost far less than the whole grid."""
    h, w = back.shape[:2]
    mx, my = _sample_maps(back, where)
    fwd_there = np.stack([cv2.remap(fwd[..., i], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                          for i in range(2)], axis=-1)
    back = back[where]
    loop = ((back + fwd_there) ** 2).sum(-1)
    scale = (back ** 2).sum(-1) + (fwd_there ** 2).sum(-1)
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return (loop < 0.01 * scale + 0.5) & inside


@dataclass(frozen=True)
class Motion:
    """The flow between consecutive frames t-1 and t on the flow grid, or a cut (every field None).

    back: t -> t-1 and fwd: t-1 -> t, float32 (h, w, 2) in grid pixels (dx, dy); mask: bool (h, w) on frame
    t, ``trusted(back, fwd)`` (``trusted(fwd, back)`` is the same check seen from frame t-1); prev, cur: the
    two frames' normalised luminance, uint8 (h, w) (``normalised``), which the flow was computed on."""

    back: np.ndarray | None = None
    fwd: np.ndarray | None = None
    mask: np.ndarray | None = None
    prev: np.ndarray | None = None
    cur: np.ndarray | None = None

    @property
    def cut(self) -> bool:
        """Whether frame t begins a new shot (nothing can be carried across)."""
        return self.back is None


class FlowPair:
    """Dense flow both ways between consecutive normalised frames, plus the cut test.

    ``method``: "dis" (OpenCV's DIS, fast preset: the stabiliser) or "farneback" (the metric).
    """

    def __init__(self, method: str = "dis") -> None:
        if method == "dis":
            dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
            self._flow = lambda a, b: dis.calc(a, b, None)
        elif method == "farneback":
            self._flow = lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 4, 15, 3, 5, 1.1, 0)
        else:
            raise ValueError(f"unknown flow method {method!r}")

    def __call__(self, prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """uint8 normalised frames t-1 and t -> (flow t -> t-1 (h, w, 2), trusted mask (h, w)), or
        (None, None) when the pair straddles a scene cut."""
        motion = self.motion(prev, cur)
        return motion.back, motion.mask

    def motion(self, prev: np.ndarray, cur: np.ndarray) -> Motion:
        """uint8 normalised frames t-1 and t -> their ``Motion`` (all None across a scene cut)."""
        if histogram_distance(prev, cur) > CUT_HISTOGRAM:
            return Motion()
        back, fwd = self._flow(cur, prev), self._flow(prev, cur)
        mask = trusted(back, fwd)
        if mask.mean() < CUT_TRACKED:
            return Motion()
        return Motion(back, fwd, mask, prev, cur)


class Motions:
    """Each frame's ``Motion`` from the frame before (DIS): call once per frame, in order, with its luminance on
    the grid (h, w); returns None for the first frame. Holds one small normalised frame."""

    def __init__(self) -> None:
        self.flows = FlowPair("dis")
        self.prev: np.ndarray | None = None

    def __call__(self, grey: np.ndarray) -> Motion | None:
        cur = normalised(grey)
        motion = None if self.prev is None else self.flows.motion(self.prev, cur)
        self.prev = cur
        return motion


class Stabiliser:
    """Carries a running ab estimate along the input's motion and blends it with each new prediction.

    ``strength`` S in [0, 1): the weight of the carried estimate where the flow is trusted
    (0 = frame by frame). Call once per frame, in order; ``cuts`` lists the frames (0-based) at
    which the estimate was reset because a new shot began.
    """

    def __init__(self, strength: float) -> None:
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"temporal smoothing must be in [0, 1) (got {strength:g})")
        self.strength = float(strength)
        self.flows = FlowPair("dis") if strength > 0 else None
        self.prev: np.ndarray | None = None
        self.state: np.ndarray | None = None
        self.frame = -1
        self.cuts: list[int] = []

    def __call__(self, grey: np.ndarray, ab: np.ndarray, given: np.ndarray | None = None,
                 motion: Motion | None = None) -> np.ndarray:
        """Input luminance on the grid (h, w) and the new prediction (2, h, w) -> stabilised ab (2, h, w).

        ``given`` (h, w) in [0, 1]: where this frame's prediction holds a user's colour points; there the
        carried estimate gives way (weight x (1 - given)), so the frame shows the colour the user asked for.
        ``motion``: the flow from the previous frame given here to this one, when the caller has it already
        (``Motions``); None: computed here."""
        self.frame += 1
        if self.flows is None:
            return ab
        cur = normalised(grey)
        back = mask = None
        if self.prev is not None:
            back, mask = self.flows(self.prev, cur) if motion is None else (motion.back, motion.mask)
            if back is None:
                self.cuts.append(self.frame)
        if back is None:
            state = ab.astype(np.float32, copy=True)
        else:
            # a soft mask: no seams where trusted and untrusted pixels meet
            w = self.strength * cv2.blur(mask.astype(np.float32), (5, 5))
            if given is not None:
                w = w * (1.0 - np.clip(given, 0.0, 1.0))
            state = w * warp(self.state, back) + (1.0 - w) * ab
        self.prev, self.state = cur, state.astype(np.float32)
        return self.state


class WarpingError:
    """Flicker of a colourised video: mean over consecutive frame pairs of the mean Euclidean
    |ab(t+1) - warp(ab(t))| (Lab units) over the pixels whose flow passes the forward-backward
    check. Flow (Farneback) comes from the *input's* luminance; pairs across a cut are skipped."""

    def __init__(self) -> None:
        self.flows = FlowPair("farneback")
        self.prev: tuple[np.ndarray, np.ndarray] | None = None
        self.errors: list[float] = []
        self.cuts = 0

    def add(self, grey: np.ndarray, ab: np.ndarray) -> float | None:
        """Input luminance (h, w) and output ab (2, h, w), Lab units, of the next frame; returns this
        pair's error (None for the first frame or a cut)."""
        cur = normalised(grey)
        err = None
        if self.prev is not None:
            back, mask = self.flows(self.prev[0], cur)
            if back is None:
                self.cuts += 1
            else:
                diff = np.sqrt(((ab - warp(self.prev[1], back)) ** 2).sum(0))
                err = float(diff[mask].mean())
                self.errors.append(err)
        self.prev = (cur, ab)
        return err

    @property
    def value(self) -> float:
        """The mean over pairs, Lab units (nan before two frames)."""
        return float(np.mean(self.errors)) if self.errors else float("nan")

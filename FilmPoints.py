"""Colour points that stay on their object through a shot: a film's points given with ``frame`` N are carried
along the input's motion from frame N until the next cut, and go into each of those frames' model input.

Owns ``FilmPoints``, which answers, frame by frame in order, the points to give the model for that frame:
  * points without ``frame``: every frame, as given;
  * points with ``frame``: from their frame on, at their tracked position (colour and radius kept). Each step
    starts from the stabiliser's optical flow (``Temporal.Motion``: DIS on the small flow grid; grid and input
    pixels mapped by the frame-to-grid scale, pixel centres lined up) and is refined at the point by a
    Lucas-Kanade step with its own forward-backward check (``track``). A point stops
      - when its position leaves the frame,
      - when its step cannot be trusted on ``STOP_AFTER`` frames running: most grid cells under it fail the
        flow's forward-backward check (``Temporal.trusted``), or its own step fails (it was occluded, or the
        picture under it changed beyond what can be followed),
      - at a cut (every carried point stops; points given on the new shot's frames start afresh);
  * a point given on a later frame M replaces each carried point whose tracked position lies within the
    larger of the two radii of it (the user corrected that object's colour); otherwise it is added;
  * ``PointCounts``: how many points were applied, on how many frames (the film's summary line).
numpy and OpenCV only (no torch). Memory: the carried points, whatever the film's length.

Usage:
    grid = flow_grid((height, width)); motions = Motions(); counts = PointCounts()
    points = FilmPoints(guidance, width, height, grid, counts)
    for index, frame in enumerate(frames):
        frame_points = points(index, motions(luminance(frame, grid)))   # tuple[Point, ...] for its Guidance
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from Hints import Point, default_radius
from Temporal import Motion, trusted

# DIS's fast preset (the stabiliser's) works at a quarter of the flow grid and smooths a small object's motion
# into what is around it: an 80 px square moving 8 px a frame over a still background at 640 x 360 gets 5 px a
# frame, tests/test_video_hints.py's square (3 px a frame) 2.64. A point following DIS alone falls behind its
# object and off it (7 px after 19 frames on the latter). A Lucas-Kanade step at the point, seeded with DIS's,
# lands within 0.05 px of the truth on both. On scripts/make_demo_clip.py's pans (grain and flicker; 48 points,
# 19 frames, 5 and 12 px a frame at 640 x 360) the points that are kept end 0.3-1.4 px (median) from their
# content, against 2.4-3.6 px with DIS alone.
KLT_WINDOW = 15  # grid cells: the Lucas-Kanade window's side (37 input pixels at 640 wide)
KLT_BACK = 0.5  # grid cells: the step is trusted when following it back lands this close to the start
# ... and DIS's check must pass on at least this share of the cells under the point (radius, at least 1.5 cells).
KEEP_TRUSTED = 0.5
MIN_CELLS = 1.5
# A point stops after this many untrusted steps running. A single failed step is not enough: film grain, a flash
# or the edge of a passing object can spoil one frame's check on a point that is still on its object (the step is
# then DIS's); an occluder that covers the point fails every check from then on. Measured on an 80 px square
# passing under a still bar: the step's own check fails from the frame the bar enters the window (0.6, then 3.0
# cells back), so the point stops 8 px before the bar, where stopping on the first failure would stop it 16 px
# before; DIS's check passed throughout (its smooth flow is consistent both ways), so it alone would have
# dragged the point onto the bar and left it there. The price: on plain, grainy areas (the sky of
# examples/rocket.png) the step's check seldom passes, so points there stop within a few frames (17 of 48 kept
# through that pan, against 33 following DIS alone, which drifted 7-9 px there).
STOP_AFTER = 2


@dataclass
class PointCounts:
    """A film's colour points so far: ``points`` that went into at least one frame's input, ``frames`` with any."""

    points: int = 0
    frames: int = 0


@dataclass(frozen=True)
class Carried:
    """A point being carried: its place in the film's list of points, the point at its tracked position
    (input pixels), and how many of its steps running could not be trusted."""

    index: int
    point: Point
    doubt: int = 0


class FilmPoints:
    """A film's colour points -> each frame's points, carried along the motion (see the module docstring).

    ``points``: in input pixels of a (``height``, ``width``) film, ``Point.frame`` 0-based (None: every frame);
    ``grid``: the flow grid (h, w) (``Temporal.flow_grid``) the motions are on; ``counts`` is kept up to date.
    """

    def __init__(self, points: Sequence[Point] | None, width: int, height: int, grid: tuple[int, int],
                 counts: PointCounts | None = None) -> None:
        points = list(points or [])
        self.every = tuple(p for p in points if p.frame is None)
        self.on: dict[int, list[Carried]] = {}
        for i, p in enumerate(points):
            if p.frame is not None:
                self.on.setdefault(p.frame, []).append(Carried(i, p))
        self.width, self.height, self.grid = width, height, grid
        self.sx, self.sy = grid[1] / width, grid[0] / height  # grid cells per input pixel
        self.carried: list[Carried] = []
        self.applied: set[int] = set()
        self.counts = counts if counts is not None else PointCounts()

    @property
    def tracking(self) -> bool:
        """Whether any point has a ``frame`` (then every frame's ``Motion`` is needed)."""
        return bool(self.on)

    def __call__(self, index: int, motion: Motion | None) -> tuple[Point, ...]:
        """Frame ``index``'s points (call for frames 0, 1, 2, ... in order). ``motion``: the flow from frame
        index - 1 to this one (``Temporal.Motions``); None for the film's first frame (nothing is carried)."""
        if motion is None or motion.cut:
            self.carried = []
        elif self.carried:
            self.carried = self._moved(motion)
        new = self.on.get(index, [])
        if new:
            self.carried = [c for c in self.carried if not any(self._covers(n.point, c.point) for n in new)] + new
        self.applied.update(c.index for c in self.carried)
        points = self.every + tuple(c.point for c in self.carried)
        self.counts.frames += bool(points)
        self.counts.points = len(self.applied) + len(self.every)
        return points

    def _radius(self, p: Point) -> float:
        return default_radius(self.width, self.height) if p.radius is None else p.radius

    def _covers(self, new: Point, old: Point) -> bool:
        """Whether ``new`` replaces the carried ``old``: within the larger of their radii (input pixels)."""
        return float(np.hypot(new.x - old.x, new.y - old.y)) <= max(self._radius(new), self._radius(old))

    def _moved(self, motion: Motion) -> list[Carried]:
        """The carried points moved from frame t-1 to t, those that stopped left out."""
        at = np.array([((c.point.x + 0.5) * self.sx - 0.5, (c.point.y + 0.5) * self.sy - 0.5)
                       for c in self.carried], np.float32)  # (N, 2) on the grid, pixel centres lined up
        areas = [self._cells(gx, gy, max(self._radius(c.point) * max(self.sx, self.sy), MIN_CELLS))
                 for c, (gx, gy) in zip(self.carried, at.tolist())]
        # DIS's check seen from frame t-1, where the points are now, over the box that holds all their areas: on
        # the whole grid it costs 2 ms a frame, while one point's whole step costs 0.3 ms
        box = (slice(min(a[0].start for a in areas), max(a[0].stop for a in areas)),
               slice(min(a[1].start for a in areas), max(a[1].stop for a in areas)))
        ok = np.zeros(self.grid, bool)
        ok[box] = trusted(motion.fwd, motion.back, box)
        seeds, area_ok = zip(*(self._seed(g, area, motion.fwd, ok) for g, area in zip(at.tolist(), areas)))
        seed = at + np.array(seeds, np.float32)
        there, step_ok = track(motion.prev, motion.cur, at, seed)
        good = step_ok & np.array(area_ok)
        kept = []
        for c, s, found, klt_ok, all_ok in zip(self.carried, seed, there, step_ok, good):
            doubt = 0 if all_ok else c.doubt + 1
            gx, gy = (found if klt_ok else s).tolist()  # a failed step: DIS's
            x, y = (gx + 0.5) / self.sx - 0.5, (gy + 0.5) / self.sy - 0.5
            if doubt < STOP_AFTER and 0 <= x < self.width and 0 <= y < self.height:
                kept.append(Carried(c.index, dataclasses.replace(c.point, x=x, y=y), doubt))
        return kept

    def _seed(self, at: list[float], area: tuple[slice, slice], fwd: np.ndarray, ok: np.ndarray
              ) -> tuple[np.ndarray, bool]:
        """DIS's step for a point at ``at`` (x, y on the grid) with the cells ``area`` under it: (the median
        forward flow (dx, dy) in grid cells over the trusted cells (``ok``, (h, w) bool) of the 3 x 3 block
        around it, or of all of them if none is trusted, whether at least KEEP_TRUSTED of ``area`` is trusted)."""
        near = self._cells(at[0], at[1], 1.0)
        flows, good = fwd[near].reshape(-1, 2), ok[near].ravel()
        return np.median(flows[good] if good.any() else flows, axis=0), bool(ok[area].mean() >= KEEP_TRUSTED)

    def _cells(self, gx: float, gy: float, reach: float) -> tuple[slice, slice]:
        """The grid cells whose centres lie within ``reach`` cells of (gx, gy) on each axis, at least the one
        under it, clipped to the grid."""
        h, w = self.grid
        cx, cy = min(max(round(gx), 0), w - 1), min(max(round(gy), 0), h - 1)
        x0, x1 = min(int(np.ceil(gx - reach)), cx), max(int(np.floor(gx + reach)), cx) + 1
        y0, y1 = min(int(np.ceil(gy - reach)), cy), max(int(np.floor(gy + reach)), cy) + 1
        return slice(max(y0, 0), min(y1, h)), slice(max(x0, 0), min(x1, w))


def track(prev: np.ndarray, cur: np.ndarray, at: np.ndarray, seed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points ``at`` (N, 2) float32 (x, y) on frame t-1's grid, and where the flow puts them on frame t (``seed``,
    (N, 2)) -> (where they are on frame t (N, 2) float32, whether each step is trusted (N,) bool): a pyramidal
    Lucas-Kanade step from the seed on the normalised frames ``prev`` and ``cur`` (uint8 (h, w)), trusted when
    it converged both ways and following it back lands within KLT_BACK cells of the start (Kalal et al. 2010)."""
    lk = dict(winSize=(KLT_WINDOW, KLT_WINDOW), maxLevel=2, flags=cv2.OPTFLOW_USE_INITIAL_FLOW)
    start = at.reshape(-1, 1, 2)
    found, ok_fwd, _ = cv2.calcOpticalFlowPyrLK(prev, cur, start, seed.reshape(-1, 1, 2).copy(), **lk)
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(cur, prev, found, start.copy(), **lk)
    gap = np.hypot(*(back - start).reshape(-1, 2).T)
    return found.reshape(-1, 2), (ok_fwd.ravel() == 1) & (ok_back.ravel() == 1) & (gap <= KLT_BACK)

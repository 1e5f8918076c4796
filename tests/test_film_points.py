"""Colour points carried through a film (issue 21, FilmPoints.py): a point given on frame N stays on its object
along the motion until the object leaves the frame, is hidden, or the shot ends; points given later replace
the carried ones they cover or add to them; points without ``frame`` stay as given; the summary line counts them.

The film test runs a random-weight tiny guided model from its checkpoint (Inference.Colorizer.from_checkpoint):
its network has learnt nothing, so the colour at a point comes from the point-following step (PointSpread),
which is enough to see where each frame's points went. The tracker's own tests feed it frames directly.
"""
from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

import Video
import VideoFiles
from conftest import ROOT
from FilmPoints import FilmPoints, PointCounts
from guided_helpers import fake_guided
from Hints import Point, parse_hints
from Temporal import Motion, Motions, Stabiliser, flow_grid, luminance, normalised

sys.path.insert(0, str(ROOT / "scripts"))
from make_demo_clip import write_clip  # noqa: E402

RED = "#c81e1e"


def texture(shape: tuple[int, int], seed: int, mean: float, spread: float, blur: float) -> np.ndarray:
    """Smooth random texture, float32 ``shape`` with the given mean and standard deviation (grey levels)."""
    t = cv2.GaussianBlur(np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32), (0, 0), blur)
    return (t - t.mean()) / t.std() * spread + mean


def a_near(frame: np.ndarray, x: int, y: int, r: int = 4) -> float:
    """Mean Lab a (red-green) of ``frame`` (uint8 RGB) around (x, y)."""
    lab = cv2.cvtColor(frame[y - r:y + r, x - r:x + r].astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    return float(lab[..., 1].mean())


# ----------------------------------------------------------------------------- a film through the whole pipeline
# 320 x 240 (a 256 x 192 flow grid: grid and input pixels differ): a mid-grey textured square moves 8 px a frame
# over a dark textured background for SHOT frames, then a cut to another scene for AFTER frames.
W, H, SHOT, AFTER, STEP, SIDE, TOP = 320, 240, 20, 8, 8, 64, 88
# Measured with the tiny model: its own colour has a = 15 to 16 everywhere; under the red point 61 on frame 0 and,
# carried, on the square on the shot's last frame. With the point on every frame at its place, 60 there after the
# cut (and 36 at the square's last place); carried on frame 0 only, 16 on the square at the shot's end.
RED_A, NOT_RED_A = 40.0, 25.0


def square_at(t: int) -> tuple[int, int]:
    """(x, y) of the square's centre on frame t of the shot."""
    return 16 + STEP * t + SIDE // 2, TOP + SIDE // 2


def film_frames():
    bg, square, other = texture((H, W), 0, 45, 12, 3), texture((SIDE, SIDE), 1, 130, 15, 2), texture((H, W), 2, 130, 30, 6)
    for t in range(SHOT):
        frame = bg.copy()
        x = square_at(t)[0] - SIDE // 2
        frame[TOP:TOP + SIDE, x:x + SIDE] = square
        yield np.clip(frame, 0, 255).astype(np.uint8)
    for t in range(AFTER):
        yield np.clip(np.roll(other, 2 * t, axis=1), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def film(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("film") / "square.mkv", film_frames(), (W, H), Fraction(24))


@pytest.fixture(scope="module")
def tiny_guided(guided_checkpoint):
    """conftest's tiny guided model, opened from its checkpoint."""
    from Inference import Colorizer

    return Colorizer.from_checkpoint(guided_checkpoint)


def test_a_point_stays_on_its_object_until_the_cut(film, tiny_guided, tmp_path, capsys):
    x0, y = square_at(0)
    points = parse_hints(json.dumps({"points": [{"x": x0, "y": y, "color": RED, "radius": 8, "frame": 0}]}), "h.json")
    report = Video.colorize_videos(tiny_guided, [film], film.parent, tmp_path, smoothing=0.8, guidance=[points],
                                   outputs=[tmp_path / "out.mp4"])
    assert report.written == [tmp_path / "out.mp4"]
    _, frames = VideoFiles.open_video(tmp_path / "out.mp4")
    out = [f.copy() for f in frames]
    assert len(out) == SHOT + AFTER
    x_end, _ = square_at(SHOT - 1)  # 152 px on, well beyond the point's radius and the square's side
    a = {"given": a_near(out[0], x0, y), "shot's end, on the square": a_near(out[SHOT - 1], x_end, y),
         "after the cut, where given": max(a_near(f, x0, y) for f in out[SHOT:]),
         "after the cut, where the square was last": max(a_near(f, x_end, y) for f in out[SHOT:])}
    assert a["given"] > RED_A and a["shot's end, on the square"] > RED_A, a  # it followed the square
    assert a["after the cut, where given"] < NOT_RED_A, a  # and stopped at the cut
    assert a["after the cut, where the square was last"] < NOT_RED_A, a
    summary = capsys.readouterr().out
    assert f"new shot at frame {SHOT}" in summary and f"1 colour point(s) applied on {SHOT} frame(s)" in summary


def test_the_command_line_prints_the_points_line_for_a_film_with_hints(film, guided_checkpoint, tmp_path, capsys):
    """`colorize film --hints film.json` (Batch.colorize_film, not colorize_videos) says the same as above."""
    import Engine

    x0, y = square_at(0)
    hints = tmp_path / "square.json"
    hints.write_text(json.dumps({"points": [{"x": x0, "y": y, "color": RED, "radius": 8, "frame": 0}]}))
    assert Engine.main([str(film), "--hints", str(hints), "--checkpoint", str(guided_checkpoint), "--device", "cpu",
                        "--output", str(tmp_path / "out.mp4")]) == 0
    summary = capsys.readouterr().out
    assert f"new shot at frame {SHOT}, 1 colour point(s) applied on {SHOT} frame(s) -> " in summary, summary


def test_the_summary_line_counts_points_only_for_a_film_with_points(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Video, "colorize_video", lambda *args, **kwargs: Video.VideoResult(28, 2.0, [20], 3, 25))
    films = [tmp_path / "a.mkv", tmp_path / "b.mkv"]
    points = parse_hints(json.dumps({"points": [{"x": 5, "y": 5, "color": RED}]}), "h.json")
    Video.colorize_videos(fake_guided(), films, tmp_path, tmp_path, smoothing=0.8, guidance=[None, points])
    a, b = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("a.mkv", "b.mkv"))]
    assert "colour point" not in a and ", new shot at frame 20, 3 colour point(s) applied on 25 frame(s) -> " in b


# ----------------------------------------------------------------------------- the tracker on its own
# 640 x 360 frames: a 256 x 144 flow grid, 2.5 input pixels a grid cell.
FW, FH = 640, 360
CELL = FW / flow_grid((FH, FW))[1]


def photo_canvas(margin: int) -> np.ndarray:
    """examples/coffee.png in grey, scaled to cover (FH + 2 margin, FW + 2 margin), uint8."""
    grey = cv2.cvtColor(cv2.imread(str(ROOT / "examples" / "coffee.png")), cv2.COLOR_BGR2GRAY)
    need = (FW + 2 * margin, FH + 2 * margin)
    scale = max(need[0] / grey.shape[1], need[1] / grey.shape[0])
    big = cv2.resize(grey, (round(grey.shape[1] * scale) + 1, round(grey.shape[0] * scale) + 1),
                     interpolation=cv2.INTER_CUBIC)
    return big[:need[1], :need[0]]


def track(points: list[Point], frames) -> list[tuple[Point, ...]]:
    """Each frame's points from FilmPoints, fed frames (uint8 (FH, FW)) in order."""
    grid = flow_grid((FH, FW))
    tracker, motions = FilmPoints(points, FW, FH, grid), Motions()
    return [tracker(t, motions(luminance(f, grid))) for t, f in enumerate(frames)]


def test_a_point_follows_a_known_translation_within_a_grid_cell():
    """The picture moves (-5, -2) px a frame (a camera pan, with grain): after 12 frames each point is within a
    grid cell (2.5 px) of where its content went (measured: 0.3 px median)."""
    canvas, rng = photo_canvas(60), np.random.default_rng(0)
    frames = [np.clip(canvas[2 * t:2 * t + FH, 5 * t:5 * t + FW] + rng.normal(0, 4, (FH, FW)), 0, 255).astype(np.uint8)
              for t in range(13)]
    given = [Point(float(x), float(y), (60.0, 40.0), radius=6, frame=0) for x in (200, 330, 460) for y in (100, 250)]
    last = track(given, frames)[-1]
    assert len(last) == len(given)
    for p, start in zip(last, given):
        assert np.hypot(p.x - (start.x - 60), p.y - (start.y - 24)) < CELL, (start, p)


def test_a_point_that_leaves_the_frame_stops():
    canvas = photo_canvas(100)
    frames = [canvas[100:100 + FH, 12 * t:12 * t + FW] for t in range(10)]  # the picture moves 12 px a frame left
    near_edge, inside = Point(40.0, 180.0, (60.0, 40.0), frame=0), Point(500.0, 180.0, (60.0, 40.0), frame=0)
    seen = track([near_edge, inside], frames)
    xs = [[p.x for p in frame] for frame in seen]
    assert len(seen[3]) == 2 and len(seen[4]) == 1  # 40 - 4 x 12 < 0: gone on frame 4
    assert xs[9][0] == pytest.approx(500 - 9 * 12, abs=CELL)  # the other one carries on


def test_a_point_hidden_by_a_still_object_stops():
    """A textured square slides under a still bar: the point on it stops before reaching the bar, rather than
    being dragged onto it (DIS's flow alone, smooth and consistent both ways, would do that)."""
    bg, square, bar = texture((FH, FW), 0, 90, 25, 3), texture((80, 80), 1, 190, 25, 2), texture((FH, 60), 2, 140, 25, 2)

    def frame(t: int) -> np.ndarray:
        f = bg.copy()
        f[140:220, 40 + 8 * t:120 + 8 * t] = square
        f[:, 400:460] = bar
        return np.clip(f, 0, 255).astype(np.uint8)
    seen = track([Point(80.0, 180.0, (60.0, 40.0), radius=6, frame=0)], (frame(t) for t in range(50)))
    last = max(t for t, points in enumerate(seen) if points)
    assert 30 <= last <= 42, last  # it reaches the bar's edge (x 400) on frame 40
    assert seen[last][0].x < 400


def test_a_cut_stops_every_carried_point_and_a_point_on_the_new_shot_starts():
    canvas = photo_canvas(40)
    other = cv2.flip(texture((FH, FW), 5, 120, 40, 4).clip(0, 255).astype(np.uint8), 1)
    frames = [canvas[40:40 + FH, 3 * t:3 * t + FW] for t in range(5)] + [other] * 3
    given = [Point(float(x), 180.0, (60.0, 40.0), frame=0) for x in (100, 300, 500)]
    new_shot = Point(320.0, 100.0, (-20.0, 50.0), frame=5)
    seen = track(given + [new_shot], frames)
    assert [len(s) for s in seen] == [3, 3, 3, 3, 3, 1, 1, 1]
    assert seen[7][0].ab == new_shot.ab


def still(frame: np.ndarray) -> Motion:
    """The motion between two identical frames (nothing moves, every cell trusted)."""
    grid = frame.shape
    zero, cur = np.zeros((*grid, 2), np.float32), normalised(frame.astype(np.float32))
    return Motion(zero, zero, np.ones(grid, bool), cur, cur)


def test_a_new_point_replaces_a_carried_one_it_covers_and_adds_to_the_others():
    grid = flow_grid((FH, FW))
    motion = still(luminance(photo_canvas(0)[:FH, :FW], grid))
    red, blue, green = (60.0, 40.0), (10.0, -50.0), (-50.0, 40.0)
    counts = PointCounts()
    tracker = FilmPoints([Point(100.0, 100.0, red, radius=10, frame=0), Point(400.0, 200.0, red, radius=4, frame=0),
                          Point(107.0, 100.0, blue, radius=2, frame=3),  # within the carried point's radius (10)
                          Point(407.0, 200.0, blue, radius=8, frame=3),  # within its own radius (8), not the other's
                          Point(300.0, 300.0, green, frame=3),  # far from both: added
                          Point(20.0, 20.0, green)],  # every frame
                         FW, FH, grid, counts)
    seen = [tracker(t, None if t == 0 else motion) for t in range(5)]
    assert [len(s) for s in seen] == [3, 3, 3, 4, 4]
    assert sorted((round(p.x, 3), round(p.y, 3), p.ab) for p in seen[4]) == [
        (20.0, 20.0, green), (107.0, 100.0, blue), (300.0, 300.0, green), (407.0, 200.0, blue)]
    assert (counts.points, counts.frames) == (6, 5)


def test_points_without_frame_stay_as_given_through_motion_and_cuts():
    canvas = photo_canvas(40)
    frames = [canvas[40:40 + FH, 5 * t:5 * t + FW] for t in range(4)] + [np.full((FH, FW), 30, np.uint8)] * 2
    every, grid, counts = Point(200.0, 150.0, (60.0, 40.0), radius=5), flow_grid((FH, FW)), PointCounts()
    tracker, motions = FilmPoints([every], FW, FH, grid, counts), Motions()
    assert all(tracker(t, motions(luminance(f, grid))) == (every,) for t, f in enumerate(frames))
    assert (counts.points, counts.frames) == (1, len(frames))


def test_the_stabiliser_gives_the_same_colour_with_the_shared_motion():
    """Video.py hands the stabiliser the motion it computed for the points: the same colour as the stabiliser's own."""
    canvas, grid = photo_canvas(40), flow_grid((FH, FW))
    greys = [luminance(canvas[40:40 + FH, 4 * t:4 * t + FW], grid) for t in range(4)] + [luminance(np.zeros((FH, FW), np.uint8), grid)]
    rng = np.random.default_rng(1)
    abs_ = [rng.normal(0, 20, (2, *grid)).astype(np.float32) for _ in greys]
    own, shared, motions = Stabiliser(0.8), Stabiliser(0.8), Motions()
    for g, ab in zip(greys, abs_):
        assert np.array_equal(own(g, ab), shared(g, ab, motion=motions(g)))
    assert own.cuts == shared.cuts == [4]

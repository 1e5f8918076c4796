"""Films with colour points (issues 20 and 21): a point with ``frame`` N goes into frame N's model input and,
tracked along the motion (FilmPoints.py, tested on its own in test_film_points.py), into the later frames'; the
hinted frame shows the user's colour, earlier frames are untouched; points without ``frame`` go to every frame;
bad points get one line naming the hint file and the entry, and in a folder the other films are still written.

The clip is synthetic: a textured grey square moving 3 px a frame over a still textured background. Most
tests use ``fake_guided`` (its colour is exactly its hints), so they check where hints go without a
trained model; one repeats the main check with the shipped model and skips while it is not guided.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

import Video
import VideoFiles
from guided_helpers import fake_guided, hint_json, shipped_guided
from Hints import HintError

W, H, FRAMES, STEP, SIDE, TOP = 256, 192, 30, 3, 64, 64  # the square: SIDE px, from x = 10 + STEP * t
K = 10  # the hinted frame: in the second batch of 8, so batches must give each frame its own hints
RED = "#ff0000"


def centre(t: int) -> tuple[int, int]:
    """(x, y) of the square's centre on frame t."""
    return 10 + STEP * t + SIDE // 2, TOP + SIDE // 2


def clip_frames(n: int = FRAMES):
    """The clip's frames, uint8 RGB (H, W, 3), grey."""
    rng = np.random.default_rng(0)
    bg = cv2.GaussianBlur(rng.uniform(0, 255, (H, W)).astype(np.float32), (0, 0), 3)
    bg = (bg - bg.mean()) / bg.std() * 25 + 90
    obj = cv2.GaussianBlur(rng.uniform(0, 255, (SIDE, SIDE)).astype(np.float32), (0, 0), 1.5)
    obj = (obj - obj.mean()) / obj.std() * 25 + 190
    for t in range(n):
        frame = bg.copy()
        x = 10 + STEP * t
        frame[TOP:TOP + SIDE, x:x + SIDE] = obj
        yield np.repeat(np.clip(frame, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


INFO = VideoFiles.VideoInfo(Path("square.mkv"), W, H, Fraction(24), FRAMES, "h264", None)


def red_point(frame: int | None = K) -> dict:
    x, y = centre(K)
    point = {"x": x, "y": y, "color": RED, "radius": 8}
    return point if frame is None else {**point, "frame": frame}


def run(colorizer, points=None, smoothing: float = 0.8) -> list[np.ndarray]:
    """The clip's colourised frames (before encoding)."""
    return [out for _, out, _ in Video.colorize_frames(colorizer, INFO, clip_frames(), smoothing, 8, points)]


def a_near(frame: np.ndarray, x: int, y: int, r: int = 4) -> float:
    """Mean Lab a (red-green) of ``frame`` around (x, y)."""
    lab = cv2.cvtColor(frame[y - r:y + r, x - r:x + r].astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    return float(lab[..., 1].mean())


def points_of(*entries: dict):
    import Hints
    return Hints.parse_hints(hint_json(*entries), "square.json")


def test_a_point_on_frame_k_colours_frame_k_and_is_carried_on():
    colorizer = fake_guided()
    plain, hinted = run(colorizer), run(colorizer, points_of(red_point()))
    for t in range(K):  # before its frame, the point changes nothing
        assert np.array_equal(plain[t], hinted[t]), f"frame {t} changed by a point on frame {K}"
    x, y = centre(K)
    assert a_near(plain[K], x, y) == pytest.approx(0, abs=0.5)
    assert a_near(hinted[K], x, y) > 15  # red at the point on its frame ...
    assert np.array_equal(plain[K][:40], hinted[K][:40])  # ... and not far from it
    # the stabiliser carries the colour along the motion: five frames on, it is on the square, not left behind
    later, (x_later, _) = K + 5, centre(K + 5)
    on_square, left_behind = a_near(hinted[later], x_later, y), a_near(hinted[later], x, y)
    assert on_square > 10 and left_behind < on_square / 2, (on_square, left_behind)


def test_a_point_on_frame_k_goes_into_frame_k_and_follows_the_square_after_it():
    """Without smoothing each frame is its own prediction, so what changes is where the point went into the
    model input: frame K and the later ones, at the square's place on each (it moves 3 px a frame), not
    where the point was given."""
    colorizer = fake_guided()
    plain, hinted = run(colorizer, smoothing=0.0), run(colorizer, points_of(red_point()), smoothing=0.0)
    changed = [t for t in range(FRAMES) if not np.array_equal(plain[t], hinted[t])]
    assert changed == list(range(K, FRAMES))
    for t in range(K, FRAMES):
        x, y = centre(t)
        assert a_near(hinted[t], x, y) > 15, t  # on the square, wherever it is by then
        assert a_near(hinted[t], x - 24, y) == pytest.approx(0, abs=0.5), t  # nothing left behind


def test_the_hinted_frame_shows_the_users_colour_not_the_carried_one():
    """On its frame the point's colour is as strong with smoothing as without (the carried estimate gives way
    under the point), rather than a fifth of it."""
    colorizer = fake_guided()
    x, y = centre(K)
    alone = a_near(run(colorizer, points_of(red_point()), smoothing=0.0)[K], x, y)
    smoothed = a_near(run(colorizer, points_of(red_point()), smoothing=0.8)[K], x, y)
    assert smoothed == pytest.approx(alone, abs=2.0)


def test_a_point_without_frame_applies_to_every_frame():
    colorizer = fake_guided()
    hinted = run(colorizer, points_of(red_point(frame=None)), smoothing=0.0)
    x, y = centre(K)
    assert all(a_near(f, x, y) > 15 for f in hinted)


def test_a_reference_applies_to_the_whole_film():
    colorizer = fake_guided()
    reference = np.zeros((40, 40, 3), np.uint8)
    reference[:] = (40, 90, 200)  # blue
    hint = colorizer.reference_hint(reference)
    out = [o for _, o, _ in Video.colorize_frames(colorizer, INFO, clip_frames(), 0.8, 8, None, hint)]
    b = [float(cv2.cvtColor(f.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)[..., 2].mean()) for f in out]
    assert max(b) < -10  # every frame is bluish


def test_the_shipped_model_follows_a_point_on_its_frame():
    """The same with the shipped model (skipped while it takes no hints): a red point on frame K reddens
    frame K there and, tracked along the motion, the square on the next frames; frames before K keep
    their colour."""
    colorizer = shipped_guided()
    plain, hinted = run(colorizer), run(colorizer, points_of(red_point()))
    for t in range(K):
        assert np.abs(plain[t].astype(int) - hinted[t]).max() <= 1, f"frame {t} changed by a point on frame {K}"
    x, y = centre(K)
    assert a_near(hinted[K], x, y) > a_near(plain[K], x, y) + 10
    x2, _ = centre(K + 2)
    assert a_near(hinted[K + 2], x2, y) > a_near(plain[K + 2], x2, y) + 5


# ----------------------------------------------------------------------------- films from files

@pytest.fixture(scope="module")
def film(tmp_path_factory) -> Path:
    import sys

    from conftest import ROOT
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_demo_clip import write_clip

    grey = (f[..., 0] for f in clip_frames(12))
    return write_clip(tmp_path_factory.mktemp("film") / "square.mkv", grey, (W, H), Fraction(24))


def test_a_frame_beyond_the_end_names_the_file_and_entry_and_writes_nothing(film, tmp_path):
    points = points_of(red_point(frame=3), red_point(frame=12))  # the film has frames 0..11
    dst = tmp_path / "out.mp4"
    with pytest.raises(HintError) as e:
        Video.colorize_video(fake_guided(), film, dst, progress=False, guidance=points, hints_name="square.json")
    message = str(e.value)
    assert "\n" not in message and message.startswith("square.json") and "12" in message, message
    assert not dst.exists() and list(tmp_path.iterdir()) == []
    # the last frame is fine
    ok = Video.colorize_video(fake_guided(), film, dst, progress=False, guidance=points_of(red_point(frame=11)))
    assert ok.frames == 12 and dst.is_file()


def test_a_bad_film_hint_fails_that_film_only(film, tmp_path, capsys):
    outside = {"x": W + 5, "y": 10, "color": RED}
    report = Video.colorize_videos(fake_guided(), [film, film], film.parent, tmp_path, smoothing=0.8,
                                   outputs=[tmp_path / "bad.mp4", tmp_path / "good.mp4"], progress=False,
                                   guidance=[points_of(outside), points_of(red_point(frame=2))],
                                   hint_names=["bad.json", None])
    assert report.written == [tmp_path / "good.mp4"] and [p for p, _ in report.failed] == [film]
    line = report.failed[0][1]
    assert line.startswith("bad.json") and str(W + 5) in line and "\n" not in line
    assert "error: bad.json" in capsys.readouterr().err


def test_hints_for_an_unguided_model_are_refused_before_decoding(tiny_checkpoint, tmp_path):
    from Inference import Colorizer
    colorizer = Colorizer.from_checkpoint(tiny_checkpoint)
    with pytest.raises(HintError, match="takes no colour points"):
        Video.colorize_video(colorizer, tmp_path / "missing.mkv", tmp_path / "out.mp4", progress=False,
                             guidance=points_of(red_point()), hints_name="square.json")

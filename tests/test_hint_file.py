"""The hint file format (Hints.parse_hints / read_hints / check_points / hints_to_json): every malformed entry is
refused with one line that names the file and the entry, and what is written reads back as the same points.

Needs numpy only (no model, no torch). Usage: python -m pytest -q tests/test_hint_file.py
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from Hints import (MAX_HINT_BYTES, MAX_POINTS, HintError, Point, ab_to_hex, check_points, hex_to_ab, hints_to_json,
                   parse_hints, read_hints, simulate_points)

GOOD = {"x": 1, "y": 2, "color": "#a83a2c"}  # points[0] of every bad case, so the bad entry is points[1]


def bad_point(**entry) -> str:
    return json.dumps({"points": [GOOD, entry]})


def refused(text: str | bytes, source: str = "hints/a.json") -> str:
    """The one-line message parse_hints gives ``text``."""
    with pytest.raises(HintError) as e:
        parse_hints(text, source)
    message = str(e.value)
    assert "\n" not in message and message.startswith(source + ": "), message
    return message


def test_a_point_reads_and_writes_back_the_same():
    text = json.dumps({"points": [{"x": 120, "y": 45, "color": "#a83a2c", "radius": 3, "frame": 0},
                                  {"x": 0.5, "y": 7, "color": "#00FF00"}, {"x": 3, "y": 4, "color": "#123456",
                                                                           "radius": None, "frame": None}]})
    points = parse_hints(text, "a.json")
    assert points[0] == Point(120.0, 45.0, hex_to_ab("#a83a2c"), 3.0, 0, "#a83a2c")
    assert points[1].radius is None and points[1].frame is None and points[2].radius is None
    assert points[0].ab[0] > 30 and points[0].ab[1] > 20  # a brick red: a and b both well above 0
    written = hints_to_json(points)
    assert written["points"][0] == {"x": 120, "y": 45, "color": "#a83a2c", "radius": 3, "frame": 0}
    assert written["points"][2] == {"x": 3, "y": 4, "color": "#123456"}  # null radius/frame: left out
    assert parse_hints(json.dumps(written), "b.json") == points
    assert parse_hints(json.dumps(written).encode("utf-8-sig"), "b.json") == points  # a BOM is fine


def test_points_made_from_ab_alone_write_a_colour_of_that_chroma():
    rng = np.random.default_rng(0)
    ab = rng.uniform(-25, 25, (2, 40, 60)).astype(np.float32)
    points = simulate_points(ab, 20, rng)
    back = parse_hints(json.dumps(hints_to_json(points)), "sim.json")
    assert [(p.x, p.y) for p in back] == [(p.x, p.y) for p in points]
    error = [np.hypot(b.ab[0] - p.ab[0], b.ab[1] - p.ab[1]) for b, p in zip(back, points)]
    assert max(error) < 1.5, error  # in gamut: only the rounding to 8 bits is lost
    assert np.hypot(*np.subtract(hex_to_ab(ab_to_hex((40.0, 30.0))), (40.0, 30.0))) < 1.0


@pytest.mark.parametrize("text, says", [
    ('{"points": [', "not valid JSON: Expecting value at line 1 column 13"),
    ('{"points": [\n  {"x": 1, "y": 2,, "color": "#000000"}]}', "not valid JSON: Expecting property name enclosed in "
                                                              "double quotes at line 2 column 19"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON (nested too deeply)"),
    ('{"points": [{"x": 1' + "0" * 5000 + ', "y": 2, "color": "#000000"}]}', "not valid JSON"),
    ("[]", 'expected an object {"points": [...]}, not a list'),
    ('{"points": [], "colour": "#ff0000"}', "unknown key 'colour'"),
    ('{}', 'no "points" list'),
    ('{"points": {"x": 1}}', '"points" must be a list of points, not an object'),
    (json.dumps({"points": [GOOD] * (MAX_POINTS + 1)}), f"{MAX_POINTS + 1} points; at most {MAX_POINTS}"),
], ids=["truncated", "syntax", "nested", "huge-number", "list", "unknown-top-key", "no-points", "points-not-list",
        "too-many"])
def test_a_malformed_file_is_refused_in_one_line(text, says):
    assert says in refused(text)


@pytest.mark.parametrize("entry, says", [
    ({**GOOD, "colour": "#ff0000"}, "unknown key 'colour' (a point has x, y, color, radius, frame)"),
    ({"y": 2, "color": "#000000"}, "missing 'x'"),
    ({"x": 2, "color": "#000000"}, "missing 'y'"),
    ({"x": 2, "y": 3}, "missing 'color'"),
    ({**GOOD, "x": True}, "x must be a number, not true/false"),
    ({**GOOD, "y": "45"}, "y must be a number, not a string"),
    ({**GOOD, "x": None}, "x must be a number, not null"),
    ({**GOOD, "color": "#zz0000"}, "color '#zz0000' is not #rrggbb"),
    ({**GOOD, "color": "#fff"}, "color '#fff' is not #rrggbb"),
    ({**GOOD, "color": "red"}, "color 'red' is not #rrggbb"),
    ({**GOOD, "color": "# ff00f"}, "color '# ff00f' is not #rrggbb"),  # int(" ff", 16) would accept it
    ({**GOOD, "color": 255}, "color 255 is not #rrggbb"),
    ({**GOOD, "radius": 0}, "radius 0 must be above 0"),
    ({**GOOD, "radius": -2.5}, "radius -2.5 must be above 0"),
    ({**GOOD, "radius": False}, "radius must be a number, not true/false"),
    ({**GOOD, "radius": 1e308}, "radius 1e+308 must be above 0 and at most 100000 pixels"),  # once a 500
    ({**GOOD, "frame": -1}, "frame -1 is not a whole number >= 0"),
    ({**GOOD, "frame": 2.5}, "frame 2.5 is not a whole number >= 0"),
    ({**GOOD, "frame": "3"}, 'frame "3" is not a whole number >= 0'),
    ({**GOOD, "frame": True}, "frame true is not a whole number >= 0"),
    ("not a point", 'expected an object like {"x": 120'),
])
def test_a_bad_point_is_named_by_its_index(entry, says):
    message = refused(json.dumps({"points": [GOOD, entry]}))
    assert message.startswith("hints/a.json: points[1]: "), message
    assert says in message, message


def test_numbers_that_are_not_finite_are_refused():
    assert "points[1]: x must be a finite number" in refused(bad_point(x=1e999, y=2, color="#000000"))
    text = '{"points": [{"x": 1, "y": 2, "color": "#000000"}, {"x": NaN, "y": 2, "color": "#000000"}]}'
    assert "points[1]: x must be a finite number" in refused(text)


def test_bytes_that_are_not_utf8_are_refused():
    assert "not UTF-8 text" in refused(b'{"points": [\xff]}')


def test_reading_is_bounded_and_names_the_file(tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MAX_HINT_BYTES + 1))
    with pytest.raises(HintError, match=rf"^{big}: hint file over 4 MB"):
        read_hints(big)
    with pytest.raises(HintError, match=rf"^{tmp_path / 'none.json'}: no such hint file$"):
        read_hints(tmp_path / "none.json")
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"points": [GOOD]}))
    assert read_hints(ok) == parse_hints(ok.read_text(), str(ok))


def check(points, width=640, height=480, frames=None) -> str | None:
    try:
        check_points(points, width, height, "hints/a.json", frames)
    except HintError as e:
        assert "\n" not in str(e)
        return str(e)
    return None


def pt(x, y, radius=None, frame=None) -> Point:
    return Point(float(x), float(y), (10.0, 10.0), radius, frame, "#a83a2c")


def test_points_outside_the_image_are_named():
    ok = pt(0, 0)
    assert check([ok, pt(639, 479)]) is None  # the last pixel is inside
    assert check([ok, pt(640, 10)]) == "hints/a.json: points[1]: x 640 is outside the 640x480 image (0 <= x < 640)"
    assert check([ok, pt(10, 480)]) == "hints/a.json: points[1]: y 480 is outside the 640x480 image (0 <= y < 480)"
    assert check([ok, pt(-0.5, 3)]) == "hints/a.json: points[1]: x -0.5 is outside the 640x480 image (0 <= x < 640)"
    assert check([ok, pt(3, -1)]).startswith("hints/a.json: points[1]: y -1 is outside")
    assert check([ok, pt(3, 3, radius=0.0)]) == "hints/a.json: points[1]: radius 0 must be above 0"
    assert check([ok] * (MAX_POINTS + 1)).startswith(f"hints/a.json: {MAX_POINTS + 1} points; at most")


def test_a_frame_beyond_the_films_end_is_named():
    points = [pt(1, 1, frame=0), pt(1, 1, frame=47), pt(1, 1)]
    assert check(points, frames=48) is None
    assert check(points + [pt(2, 2, frame=48)], frames=48) == (
        "hints/a.json: points[3]: frame 48 is beyond the film's end (it has 48 frames, 0 to 47)")
    assert check(points + [pt(2, 2, frame=48)]) is None  # a photo, or a film of unknown length: not checked


def test_a_big_reference_is_read_without_a_full_size_float_copy():
    """A large reference photo is averaged down as integers before its colours are read: numpy's peak allocation
    stays far below one float copy of the photo (108 MB here), and the hint is the one read at full size."""
    import tracemalloc

    import cv2
    import Quantization
    from Hints import ab_histogram, reference_hint
    from FullResolution import lab_of
    from ImageIO import to_float

    bins = Quantization.ab_bins(10).numpy()
    img = np.zeros((3000, 3000, 3), np.uint8)
    img[..., 0], img[:1500, :, 1] = 200, 120
    img[..., 2] = np.linspace(0, 255, 3000).astype(np.uint8)
    tracemalloc.start()
    got = reference_hint(img, bins, 128)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40e6, peak
    want = ab_histogram(lab_of(np.clip(cv2.resize(to_float(img), (128, 128), interpolation=cv2.INTER_AREA), 0, 1))[1:],
                        bins)
    assert np.abs(got - want).sum() < 0.05


def test_a_huge_radius_made_in_code_covers_the_map_without_overflow():
    """local_map clamps a patch's reach: a radius past the float range's edge once raised OverflowError (a 500)."""
    from Hints import local_map

    hint = local_map([Point(3.0, 4.0, (50.0, 20.0), radius=1.7e308)], 48, 64, 128)  # scaled up: inf
    assert hint[2].min() == 1.0 and np.allclose(hint[0], 50.0 / 110.0)

"""Guided colour from the command line: --hints FILE|DIR, --reference PHOTO|DIR and --confidence on photos and films.

A point lands where the file puts it (a model that echoes its hint map, no training needed); a photo whose hints
or reference cannot be used fails alone with one line naming the file and the entry while the others are written
(also with --workers); a model that takes no hints, or gives no confidence map, is refused before any work with
exit status 2; films get their points (with frames) and reference, and a frame past the end is named. The last
test colours a grey photo red at one point with the shipped model, and skips while that model is not guided.

Usage: python -m pytest -q tests/test_hints_cli.py
"""
from __future__ import annotations

import json
import re
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import Engine
from conftest import ROOT, real_photo
from Hints import hex_to_ab, parse_hints
from Folders import colorize_paths
from Inference import Colorizer
from References import ModelConfig, Paths

RED = "#d01010"


def grey_photos(folder: Path, names=("astronaut", "chelsea", "coffee"), size: int = 64) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.fromarray(real_photo(n, size)).convert("L").save(folder / f"{n}.png")
    return [folder / f"{n}.png" for n in names]


def hint_file(path: Path, *points: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"points": list(points)}))
    return path


def run(*argv) -> int:
    return Engine.main([str(a) for a in argv])


def errors(capsys) -> tuple[list[str], str]:
    """(the error and warning lines on stderr, stdout), progress bars left out (a worker's line can follow the
    parent's bar on the same line)."""
    out, err = capsys.readouterr()
    return [m.group(0) for m in re.finditer(r"(error|warning): .*", err)], out


# ----------------------------------------------------------------------------- where a point lands

def echo_colorizer(size: int = 32) -> Colorizer:
    """A "model" whose colour is its hint map (ab where points are, grey elsewhere) and whose uncertainty is 1
    outside the points: what a perfectly obedient guided model would do, so geometry can be checked exactly."""
    def predict(L, t, hints=None, global_hint=None):
        n = len(L)
        if hints is None:
            return np.zeros((n, 2, size, size), np.float32), np.ones((n, 1, size, size), np.float32)
        return hints[:, :2].copy(), 1.0 - hints[:, 2:3]
    return Colorizer(predict, ModelConfig(image_size=size, guided=True), name="echo",
                     bins=np.zeros((4, 2), np.float32))


def test_a_point_colours_its_place_and_the_confidence_map_shows_it(tmp_path):
    src = tmp_path / "grey.png"
    Image.new("L", (120, 80), 128).save(src)  # wide: x and y scale differently onto the square working size
    hints = hint_file(tmp_path / "grey.json", {"x": 90, "y": 20, "color": RED, "radius": 6})
    report = colorize_paths(echo_colorizer(), [src], outputs=[tmp_path / "out.png"], progress=False,
                            hints=[hints], references=[None], confidence=True)
    assert report.written == [tmp_path / "out.png"] and not report.failed
    rgb = np.asarray(Image.open(tmp_path / "out.png")).astype(int)
    conf = np.asarray(Image.open(tmp_path / "out.confidence.png"))
    assert conf.shape == (80, 120) and rgb.shape == (80, 120, 3)
    r, g, b = rgb[20, 90]
    assert r - g > 60 and r - b > 60, rgb[20, 90]  # red at (x 90, y 20)
    for y, x in ((20, 30), (60, 90), (70, 10)):  # same row, same column, elsewhere: grey
        assert np.ptp(rgb[y, x]) <= 3, (y, x, rgb[y, x])
    assert conf[20, 90] < 30 and conf[70, 10] > 225  # sure where the point is


# ----------------------------------------------------------------------------- one photo, a folder

def test_one_photo_with_hints_and_a_confidence_map(tmp_path, guided_checkpoint, capsys):
    src = grey_photos(tmp_path / "in", ["coffee"])[0]
    hints = hint_file(tmp_path / "coffee.json", {"x": 10, "y": 5, "color": RED})
    assert run(src, "--hints", hints, "--confidence", "--output", tmp_path / "out.png",
               "--checkpoint", guided_checkpoint) == 0
    assert "wrote 1 image(s)" in capsys.readouterr().out
    conf = Image.open(tmp_path / "out.confidence.png")
    assert conf.mode == "L" and conf.size == Image.open(tmp_path / "out.png").size == Image.open(src).size


def test_points_are_checked_against_the_upright_photo(tmp_path, guided_checkpoint, capsys):
    """x and y count in the photo as shown, after its EXIF rotation: a 60x40 JPEG turned upright is 40x60."""
    src = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(real_photo("coffee", 60)[:40, :60]).convert("L").save(src, exif=exif.tobytes())
    inside = hint_file(tmp_path / "in.json", {"x": 39, "y": 59, "color": RED})
    assert run(src, "--hints", inside, "--output", tmp_path / "a.png", "--checkpoint", guided_checkpoint) == 0
    outside = hint_file(tmp_path / "out.json", {"x": 1, "y": 1, "color": RED}, {"x": 59, "y": 10, "color": RED})
    assert run(src, "--hints", outside, "--output", tmp_path / "b.png", "--checkpoint", guided_checkpoint) == 1
    lines, out = errors(capsys)
    assert lines == [f"error: {outside}: points[1]: x 59 is outside the 40x60 image (0 <= x < 40)"]
    assert "1 failed" in out and not (tmp_path / "b.png").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_bad_hint_file_fails_its_photo_alone(tmp_path, guided_checkpoint, capfd, workers):
    """Also with --workers 2, whose processes print their own errors (hence capfd)."""
    grey_photos(tmp_path / "in")
    hints = tmp_path / "hints"
    hint_file(hints / "astronaut.json", {"x": 3, "y": 3, "color": RED, "radius": 2})
    bad = hint_file(hints / "chelsea.json", {"x": 3, "y": 3, "color": "#zz0000"})  # coffee: no file, automatic
    out = tmp_path / "out"
    assert run(tmp_path / "in", "--hints", hints, "--confidence", "--output", out, "--checkpoint", guided_checkpoint,
               "--workers", workers) == 1
    lines, text = errors(capfd)
    assert lines == [f"error: {bad}: points[0]: color '#zz0000' is not #rrggbb"]
    assert "wrote 2 image(s)" in text and "1 failed" in text
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.confidence.png", "astronaut.png",
                                                     "coffee.confidence.png", "coffee.png"]


def test_a_hints_folder_mirrors_the_input_folder(tmp_path, guided_checkpoint, capsys):
    grey_photos(tmp_path / "in", ["astronaut"])
    grey_photos(tmp_path / "in" / "sub", ["coffee"])
    hints = tmp_path / "hints"
    hint_file(hints / "astronaut.json", {"x": 1, "y": 1, "color": RED})
    used = hint_file(hints / "sub" / "coffee.json", {"x": 1, "y": 1, "color": "#00000g"})  # visible when used
    stray = hint_file(hints / "coffee.json", {"x": 1, "y": 1, "color": "#00000g"})  # not in/coffee: unused
    assert run(tmp_path / "in", "--hints", hints, "--output", tmp_path / "out", "--checkpoint", guided_checkpoint) == 1
    lines, text = errors(capsys)
    assert lines[0].startswith(f"warning: 1 hint file(s) in {hints} match no input, so they are not used: {stray} ")
    assert lines[1:] == [f"error: {used}: points[0]: color '#00000g' is not #rrggbb"]
    assert "wrote 1 image(s)" in text and "1 failed" in text


def test_skip_existing_redoes_a_photo_whose_confidence_map_is_missing(tmp_path, guided_checkpoint, capsys):
    grey_photos(tmp_path / "in", ["astronaut", "coffee"])
    out = tmp_path / "out"
    assert run(tmp_path / "in", "--confidence", "--output", out, "--checkpoint", guided_checkpoint) == 0
    (out / "coffee.confidence.png").unlink()  # stopped between the two writes
    capsys.readouterr()
    assert run(tmp_path / "in", "--confidence", "--skip-existing", "--output", out,
               "--checkpoint", guided_checkpoint) == 0
    assert "wrote 1 image(s)" in (text := capsys.readouterr().out) and "1 already there" in text
    assert (out / "coffee.confidence.png").is_file()


# ----------------------------------------------------------------------------- references

def test_reference_photos_guide_and_bad_ones_fail_alone(tmp_path, guided_checkpoint, capsys):
    grey_photos(tmp_path / "in")
    refs = tmp_path / "refs"
    refs.mkdir()
    Image.fromarray(real_photo("rocket", 48)).save(refs / "astronaut.jpg")
    Image.new("RGB", (40, 30), (90, 90, 90)).save(refs / "chelsea.png")  # grey in RGB: no colour to give
    out = tmp_path / "out"
    assert run(tmp_path / "in", "--reference", refs, "--output", out, "--checkpoint", guided_checkpoint) == 1
    lines, text = errors(capsys)
    assert lines == [f"error: {refs / 'chelsea.png'}: the reference is grey (mean chroma 0.0); it has no colour "
                     "to give"]
    assert "wrote 2 image(s)" in text and "1 failed" in text
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png", "coffee.png"]
    Image.new("RGB", (40, 30), (90, 90, 90)).save(refs / "astronaut.png")  # two references for one photo
    assert run(tmp_path / "in", "--reference", refs, "--output", out, "--checkpoint", guided_checkpoint) == 2
    assert errors(capsys)[0] == [f"error: --reference {refs}: {refs / 'astronaut.jpg'} and {refs / 'astronaut.png'} "
                                 f"are both the reference for {tmp_path / 'in' / 'astronaut.png'}; keep one"]


@pytest.mark.parametrize("kind", ["grey", "grey-rgb", "not-an-image", "colour"])
def test_one_reference_for_every_photo_is_checked_once_before_the_work(tmp_path, guided_checkpoint, capsys, kind):
    grey_photos(tmp_path / "in", ["astronaut", "coffee"])
    ref = tmp_path / "ref.png"
    if kind == "not-an-image":
        ref.write_text("not a photo")
    else:
        Image.fromarray(real_photo("rocket", 48)).convert({"grey": "L", "grey-rgb": "L", "colour": "RGB"}[kind]) \
            .convert("L" if kind == "grey" else "RGB").save(ref)
    rc = run(tmp_path / "in", "--reference", ref, "--output", tmp_path / "out", "--checkpoint", guided_checkpoint)
    lines, text = errors(capsys)
    expected = {"grey": f"error: {ref}: the reference is a grey image; it has no colour to give",
                "grey-rgb": f"error: {ref}: the reference is grey (mean chroma 0.0); it has no colour to give",
                "not-an-image": f"error: {ref}: not a readable image (unknown or corrupt format)"}
    if kind == "colour":
        assert rc == 0 and lines == [] and "wrote 2 image(s)" in text
    else:
        assert rc == 1 and lines == [expected[kind]] and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- refused before any work

def test_a_model_without_hints_or_confidence_is_refused_up_front(tmp_path, tiny_checkpoint, capsys):
    grey_photos(tmp_path / "in", ["astronaut", "coffee"])
    hints = hint_file(tmp_path / "hints" / "coffee.json", {"x": 1, "y": 1, "color": RED})
    for extra in (["--hints", hints.parent], ["--hints", hints.parent, "--workers", "2"],
                  ["--reference", tmp_path / "in" / "coffee.png"]):
        assert run(tmp_path / "in", *extra, "--output", tmp_path / "out", "--checkpoint", tiny_checkpoint) == 2
        assert errors(capsys)[0] == ["error: tiny.pt: this model takes no colour points or reference photo (it was "
                                     "trained without them); use the guided release, weights/colorizer.onnx"]
    assert run(tmp_path / "in", "--confidence", "--output", tmp_path / "out", "--checkpoint", tiny_checkpoint) == 2
    assert errors(capsys)[0][0].startswith("error: tiny.pt: this model gives no confidence map")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, says", [
    (["{inp}", "--hints", "{hints}/coffee.json"], "--hints {hints}/coffee.json is one file, for one photo or film; "
                                                  "for 2 inputs give a folder holding <photo stem>.json for each"),
    (["{inp}", "--hints", "{none}"], "--hints {none}: no such file or folder"),
    (["{inp}", "--reference", "{none}"], "--reference {none}: no such file or folder"),
    (["--mode", "serve", "--hints", "{hints}"], "--hints does not apply to --mode serve"),
    (["--mode", "export", "--confidence"], "--confidence does not apply to --mode export"),
    (["--mode", "evaluate", "--confidence"], "--confidence does not apply to --mode evaluate"),
])
def test_usage_errors_exit_2(tmp_path, guided_checkpoint, capsys, argv, says):
    grey_photos(tmp_path / "in", ["astronaut", "coffee"])
    hint_file(tmp_path / "hints" / "coffee.json", {"x": 1, "y": 1, "color": RED})

    def fill(a: str) -> str:
        return a.format(inp=tmp_path / "in", hints=tmp_path / "hints", none=tmp_path / "none")
    assert run(*map(fill, argv), "--output", tmp_path / "out", "--checkpoint", guided_checkpoint) == 2
    assert errors(capsys)[0] == [f"error: {fill(says)}"]


# ----------------------------------------------------------------------------- films

@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 6-frame greyscale H.264 clip, 96x64."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_demo_clip import clip_frames, write_clip

    path = tmp_path_factory.mktemp("film") / "pan.mp4"
    frames = clip_frames([real_photo("astronaut", 200)] * 2, (96, 64), 6, 3, 2)
    return write_clip(path, frames, (96, 64), Fraction(25), audio=False)


def test_a_film_gets_its_points_and_reference(tmp_path, clip, guided_checkpoint, capsys, monkeypatch):
    import Video

    seen = {}

    def colorize_video(colorizer, src, dst, smoothing=0.8, batch_size=8, max_pixels=None, progress=True,
                       cfg=None, guidance=None, reference=None):
        seen.update(src=src, guidance=guidance, reference=reference)
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        Path(dst).write_bytes(b"film")
        return Video.VideoResult(6, 0.1)
    monkeypatch.setattr(Video, "colorize_video", colorize_video)
    points = [{"x": 95, "y": 63, "color": RED, "frame": 5}, {"x": 0, "y": 0, "color": "#2040c0", "radius": 4}]
    hints = hint_file(tmp_path / "hints" / "pan.json", *points)
    ref = tmp_path / "ref.jpg"
    Image.fromarray(real_photo("rocket", 48)).save(ref)
    assert run(clip, "--hints", hints, "--reference", ref, "--output", tmp_path / "out",
               "--checkpoint", guided_checkpoint) == 0
    assert "wrote 1 video(s)" in capsys.readouterr().out
    assert seen["src"] == clip and seen["guidance"] == parse_hints(hints.read_text(), str(hints))
    assert seen["reference"].shape[0] > 200 and seen["reference"][-1] == 1.0  # a global hint, "given"
    assert seen["guidance"][0].frame == 5 and seen["guidance"][1].frame is None


def test_a_frame_past_the_films_end_is_named(tmp_path, clip, guided_checkpoint, capsys):
    hints = hint_file(tmp_path / "hints" / "pan.json", {"x": 1, "y": 1, "color": RED, "frame": 5},
                      {"x": 1, "y": 1, "color": RED, "frame": 6})
    assert run(clip, "--hints", hints, "--output", tmp_path / "out", "--checkpoint", guided_checkpoint) == 1
    lines, text = errors(capsys)
    assert lines == [f"error: {hints}: points[1]: frame 6 is beyond the film's end (it has 6 frames, 0 to 5)"]
    assert "1 failed" in text and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- the shipped model

def test_the_shipped_model_colours_a_grey_photo_red_at_a_red_point(tmp_path):
    """examples/coffee.png (grey) with one red point on the table: red there; the saucer and the cup, other
    objects away from it, change far less than the point's place does (the refiner and the point spread carry a
    point's colour widely: the cup moves by 6.7 Lab units where the point's place moves by 53.8)."""
    model = Paths().default_checkpoint
    if not Colorizer.from_checkpoint(model).guided:
        pytest.skip(f"{model} is not a guided model (it takes no colour points): the guided release replaces it")
    from FullResolution import lab_of

    src = tmp_path / "coffee.png"
    Image.open(ROOT / "examples" / "coffee.png").convert("L").save(src)  # 600x400
    hints = hint_file(tmp_path / "coffee.json", {"x": 500, "y": 120, "color": RED})  # mid-grey wood: red fits
    assert run(src, "--hints", hints, "--output", tmp_path / "hinted.png") == 0
    assert run(src, "--output", tmp_path / "auto.png") == 0

    def ab(name: str, x: int, y: int, r: int = 2) -> np.ndarray:
        rgb = np.asarray(Image.open(tmp_path / name), np.float32)[y - r:y + r + 1, x - r:x + r + 1] / 255.0
        return lab_of(rgb)[1:].reshape(2, -1).mean(axis=1)
    red = np.array(hex_to_ab(RED))
    near, before = ab("hinted.png", 500, 120), ab("auto.png", 500, 120)
    # the point's colour, near enough (measured: 0.2 from the red asked for with the point spread, 13.3 from the
    # network alone, 54.0 without the point; the lightness stays the photo's)
    assert np.hypot(*(near - red)) < 5 and np.hypot(*(near - red)) < 0.5 * np.hypot(*(before - red)), (near, before)
    moved = np.hypot(*(near - before))
    for x, y in ((130, 290), (220, 160)):  # the saucer's far side, the cup
        far, auto = ab("hinted.png", x, y, 8), ab("auto.png", x, y, 8)
        # measured: 1.4 and 6.7 (the network alone: 1.8 and 7.1; the hint layers without the refiner: 0.0 and 1.6)
        assert np.hypot(*(far - auto)) < min(9.0, 0.25 * moved), ((x, y), far, auto, moved)

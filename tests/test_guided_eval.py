"""Guided evaluation (issue 20): seeded simulated users, the two trivial baselines, the hint error, the evaluate-mode
rows and scripts/guided_table.py. The baselines and the protocol need no model; the end-to-end rows need the shipped
model to be the guided release and skip otherwise."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import load_script, real_photo
from guided_helpers import shipped_guided
from FullResolution import lab_of
from GuidedBaselines import ab_stats, mean_std_transfer, points_baseline
from PointSpread import spread_points
from GuidedEvaluate import Reference, Setting, hint_error, parse_setting, photo_points, pick_reference
from Hints import HintError, Point, simulate_points
from ImageIO import to_float
from References import LAB, Paths


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return real_photo("astronaut", 120)


def test_simulated_points_are_seeded_by_the_file_name_and_nested(photo):
    a, b = photo_points(photo, "astronaut.png", 10), photo_points(photo, "astronaut.png", 10)
    assert a == b and len(a) == 10
    assert photo_points(photo, "other.png", 10) != a
    assert photo_points(photo, "astronaut.png", 4) == a[:4]  # 4 points are the first 4 of 10
    # The lazy full-resolution truth gives exactly what simulate_points gives on the whole ab array.
    import zlib
    full = lab_of(to_float(photo))[1:]
    assert simulate_points(full, 10, np.random.default_rng(zlib.crc32(b"astronaut.png"))) == list(a)


def test_parse_setting_reads_evaluate_modes_hints_and_reference():
    assert parse_setting(None, None) is None and parse_setting("0", "") is None
    assert parse_setting("3", None) == Setting(points=3)
    assert parse_setting(None, "other") == Setting(reference="other")
    assert Setting(10, "self").label == "10 points + reference self" and Setting(1).label == "1 point"
    for bad in ("hints.json", "-1", "10001"):
        with pytest.raises(ValueError, match="number of colour points"):
            parse_setting(bad, None)
    with pytest.raises(ValueError, match="'self'.*'other'"):
        parse_setting(None, "photo.jpg")


def test_other_reference_is_the_next_colour_photo_never_the_photo_itself():
    refs = [Reference(n, np.zeros(3), np.zeros(2), np.ones(2)) if n else None for n in ("a", None, "c", "d")]
    assert [pick_reference(refs, i, "other").name for i in (0, 2, 3)] == ["c", "d", "a"]
    assert [pick_reference(refs, i, "self").name for i in (0, 2, 3)] == ["a", "c", "d"]


def test_mean_std_transfer_gives_the_references_mean_and_std(photo):
    rng = np.random.default_rng(0)
    auto = rng.normal(3.0, 7.0, (2, 48, 64)).astype(np.float32)
    mean, std = ab_stats(real_photo("coffee", 120), 128)
    out = mean_std_transfer(auto, mean, std)
    np.testing.assert_allclose(out.reshape(2, -1).mean(1), mean, atol=1e-3)
    np.testing.assert_allclose(out.reshape(2, -1).std(1), std, rtol=1e-4)
    flat = mean_std_transfer(np.zeros((2, 8, 8), np.float32), mean, std)  # a grey output: no infinite scale
    assert np.isfinite(flat).all()


def edge_scene() -> tuple[np.ndarray, np.ndarray]:
    """ab = 0 everywhere on a 100 x 200 grid; L = 30 left of column 100, 80 right of it."""
    L = np.full((100, 200), 30.0, np.float32)
    L[:, 100:] = 80.0
    return np.zeros((2, 100, 200), np.float32), L


def test_points_baseline_gives_the_point_its_colour_and_fades_with_distance_and_across_an_edge():
    ab, L = edge_scene()
    point = Point(95, 50, (40.0, -20.0))
    out = spread_points(ab, L, [point], 100, 200, sigma_d=0.2, sigma_l=10.0)
    np.testing.assert_allclose(out[:, 50, 95], [40.0, -20.0], atol=1e-4)  # the point's own colour
    assert out[0, 50, 90] > 38 and out[1, 50, 90] < -19  # 5 px away, same lightness: nearly all of it
    assert np.abs(out[:, 50, 102]).max() < 0.1  # 7 px away but across the lightness edge: nothing
    assert np.abs(out[:, 50, 0]).max() < 0.5  # 95 px = 4.75 sigma_d away, same lightness: faded out
    two = spread_points(ab, L, [point, Point(95, 52, (0.0, 20.0))], 100, 200, sigma_d=0.2, sigma_l=10.0)
    assert 10 < two[0, 51, 95] < 30 and abs(two[1, 51, 95]) < 1  # overlapping corrections are averaged


def test_points_baseline_on_a_photo_applies_the_correction_at_the_point(photo):
    auto = np.zeros((2, 64, 64), np.float32)
    point = Point(40, 30, (30.0, 25.0))
    out = points_baseline(photo, auto, [point]) * LAB.ab_scale  # the grid is the photo's own size here
    assert out.shape == (2,) + photo.shape[:2]
    np.testing.assert_allclose(out[:, 30, 40], point.ab, atol=1e-3)
    big = np.zeros((3000, 4000), np.uint8)  # a big photo is corrected on a grid of 512 px at most (memory bounded)
    assert points_baseline(big, auto, [Point(3999, 2999, (10.0, 10.0))]).shape == (2, 384, 512)


def test_hint_error_measures_the_outputs_colour_inside_each_patch():
    red = np.zeros((40, 100, 3), np.uint8)
    red[...] = (200, 30, 30)
    red[:, 50:] = (30, 30, 200)  # blue right half
    lab = lab_of(to_float(red[:1, [0, 99]]))[1:, 0]  # (2, 2): red's ab, blue's ab
    blue_point = Point(80, 10, (float(lab[0, 1]), float(lab[1, 1])))
    assert hint_error(red, [blue_point]) < 0.01
    wrong = Point(20, 10, blue_point.ab)  # a blue point on the red half
    assert hint_error(red, [wrong]) == pytest.approx(float(np.hypot(*(lab[:, 0] - lab[:, 1]))), rel=1e-4)


def test_unguided_model_refuses_hints_before_reading_photos(tiny_checkpoint, tmp_path):
    from Evaluate import evaluate_inputs
    from Inference import Colorizer

    with pytest.raises(HintError, match="takes no colour points"):
        evaluate_inputs(Colorizer.from_checkpoint(tiny_checkpoint), [tmp_path / "absent"], tmp_path, batch_size=1,
                        max_pixels=10 ** 7, smoothing=0.0, grid=False, open_scorers=tuple, hints="3")


class HintCopier:
    """A stand-in guided model, no network: its ab is the hint map where there is one and 0 elsewhere; it records the
    global hints it is given. Enough to test the evaluation's plumbing on every install."""

    def __init__(self):
        self.globals: list[np.ndarray] = []

    def __call__(self, L, t=None, hints=None, global_hint=None):
        self.globals.append(global_hint)
        return (np.zeros((len(L), 2, 64, 64), np.float32) if hints is None else hints[:, :2].copy()), None


def copier_colorizer():
    from Inference import Colorizer
    from References import ModelConfig

    grid = np.arange(-100.0, 101.0, 20.0, dtype=np.float32)
    bins = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
    return Colorizer(HintCopier(), ModelConfig(image_size=64, guided=True), name="copier", bins=bins)


def test_guided_folder_runs_the_model_with_the_points_and_the_next_photos_reference(tmp_path, capsys):
    from GuidedEvaluate import evaluate_guided_folder
    from Hints import reference_hint

    photos = {name: real_photo(name, 96) for name in ("astronaut", "coffee")}
    for name, rgb in photos.items():
        Image.fromarray(rgb).save(tmp_path / f"{name}.png")
    Image.fromarray(photos["coffee"].mean(axis=2).astype(np.uint8)).save(tmp_path / "grey.png")
    colorizer = copier_colorizer()
    files = sorted(tmp_path.glob("*.png"))  # astronaut, coffee, grey
    rows, _, failed = evaluate_guided_folder(colorizer, files, [Setting(5, "other")], progress=False)
    assert not failed and "grey.png: left out (no colour" in capsys.readouterr().err
    assert [r["method"] for r in rows[:4]] == ["grey", "copier", "copier + 5 points + reference other",
                                              "transfer+spread + 5 points + reference other"]
    assert sorted({r["file"] for r in rows}) == ["astronaut.png", "coffee.png"]
    model = [r for r in rows if r["method"].startswith("copier +")]
    # The copier was given the points (their patches are blurred by the upsampling; ignoring them gives about 30)
    assert all(r["hint_error"] < 15 for r in model), model
    # astronaut's reference is coffee (the next colour photo), coffee's is astronaut (wrapping past grey.png)
    given = [g[1] for g in colorizer.predict.globals]
    np.testing.assert_allclose(given[0], reference_hint(photos["coffee"], colorizer.bins, 64))
    np.testing.assert_allclose(given[1], reference_hint(photos["astronaut"], colorizer.bins, 64))
    assert all(not g[0].any() for g in colorizer.predict.globals)  # the automatic row: no hints


@pytest.fixture(scope="module")
def guided_model():
    return shipped_guided()


@pytest.fixture(scope="module")
def three_photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("three")
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(real_photo(name, 96)).save(d / f"{name}.png")
    return d


def test_evaluate_mode_with_hints_prints_model_and_baseline_rows(guided_model, three_photos, tmp_path, capsys):
    from Evaluate import evaluate_inputs

    for hints, ref, rows in (("3", None, ["+ 3 points |", "| spread + 3 points |"]),
                             (None, "other", ["+ reference other |", "| transfer + reference other |"])):
        rc = evaluate_inputs(guided_model, [three_photos], tmp_path / "ev", batch_size=2, max_pixels=10 ** 7,
                             smoothing=0.0, grid=False, open_scorers=tuple, hints=hints, reference=ref)
        out = capsys.readouterr().out
        assert rc == 0 and "(3 photos)" in out and f"| {guided_model.name} | 3 |" in out and "| grey | 3 |" in out
        assert all(r in out for r in rows), out
    summary = json.loads((tmp_path / "ev" / "metrics.json").read_text())["summary"]
    methods = [r["method"] for r in summary]
    assert methods[2:] == [f"{guided_model.name} + reference other", "transfer + reference other"]


def test_evaluate_mode_through_the_command_line(guided_model, three_photos, tmp_path, capsys):
    import Engine

    if "hints" not in vars(Engine.build_parser("evaluate").parse_args([])):
        pytest.skip("Engine has no --hints option yet")
    rc = Engine.main(["--mode", "evaluate", str(three_photos), "--hints", "2", "--no-fd", "--output",
                      str(tmp_path / "ev"), "--checkpoint", str(Paths().default_checkpoint)])
    assert rc == 0 and "| spread + 2 points |" in capsys.readouterr().out


def test_guided_table_script_prints_and_writes_its_rows(guided_model, three_photos, tmp_path, capsys):
    script = load_script("guided_table")
    assert script.main([str(three_photos), "--rows", "1,self", "--limit", "2", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for row in ("| grey | 2 |", "+ 1 point | 2 |", "| spread + 1 point | 2 |", "+ reference self | 2 |",
                "| transfer + reference self | 2 |"):
        assert row in out
    doc = json.loads((tmp_path / "guided_table.json").read_text())
    assert doc["folders"][0]["photos"] == 2 and "hint_error" in doc["folders"][0]["table"][2]
    assert (tmp_path / three_photos.name / "metrics.csv").is_file()


def test_guided_table_rows_option():
    script = load_script("guided_table")
    assert script.settings_of("auto,2,self,other") == [Setting(points=2), Setting(reference="self"),
                                                      Setting(reference="other")]
    with pytest.raises(ValueError, match="neither a number of points"):
        script.settings_of("10,photo.jpg")

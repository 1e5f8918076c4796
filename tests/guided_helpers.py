"""Helpers for the guided-colour tests of the web app and of films (issue 20).

  * ``fake_guided``: a Colorizer (the real class, so ``hint_inputs`` and ``Hints.local_map`` run as in use)
    around a stand-in network whose colour is exactly its hints: ab = the hinted colour on each point's
    patch, the reference's mean colour elsewhere, grey without either. It tests where hints go, with no
    trained model.
  * ``shipped_guided``: the shipped weights/colorizer.onnx, or a skip with the reason when it is not guided.
  * ``hint_format``: Hints.parse_hints / check_points while the hint file format is still being written
    elsewhere (a minimal stand-in, installed only where Hints lacks them; the real ones win once merged).

Usage:
    colorizer = fake_guided()
    def test_x(hint_format): ...        # a fixture: import it into the test module
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import Hints
from Hints import HintError, Point, hex_to_ab
from Inference import Colorizer
from References import ModelConfig, Paths

BINS = np.array([(a, b) for a in range(-110, 111, 10) for b in range(-110, 111, 10)], np.float32)  # (Q, 2)


def fake_guided(size: int = 64, name: str = "fake-guided.onnx") -> Colorizer:
    """A guided Colorizer whose network answers with its hints (see the module docstring); ab at ``size``."""
    def predict(L, t=None, hints=None, global_hint=None):
        ab = np.zeros((len(L), 2, size, size), np.float32)
        if global_hint is not None:
            mean = (global_hint[:, :-1] @ BINS) / 110.0  # (B, 2) in network units
            ab += mean[:, :, None, None] * global_hint[:, -1, None, None, None]
        if hints is not None:
            m = hints[:, 2:3]
            ab = ab * (1 - m) + hints[:, :2]
        return ab, None
    return Colorizer(predict, ModelConfig(image_size=size, loss="classification", guided=True), "cpu", name,
                     None, BINS)


def shipped_guided() -> Colorizer:
    """The shipped model (weights/colorizer.onnx), skipping the test when it is absent or takes no hints."""
    path = Paths().default_checkpoint
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    colorizer = Colorizer.from_checkpoint(path)
    if not colorizer.guided:
        pytest.skip(f"{path} is not a guided model (Colorizer.guided is False): hints cannot act yet")
    return colorizer


def _parse_hints(text: str | bytes, source: str) -> list[Point]:
    """Stand-in for Hints.parse_hints: the {"points": [...]} JSON -> points; HintError naming source and entry."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise HintError(f"{source}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("points"), list):
        raise HintError(f'{source}: expected {{"points": [...]}}')
    points = []
    for i, entry in enumerate(data["points"]):
        unknown = set(entry) - {"x", "y", "color", "radius", "frame"}
        if unknown:
            raise HintError(f"{source}: point {i}: unknown key {sorted(unknown)[0]!r}")
        try:
            ab = hex_to_ab(entry["color"])
        except (KeyError, ValueError) as e:
            raise HintError(f"{source}: point {i}: {e}") from None
        if entry.get("radius") is not None and entry["radius"] <= 0:
            raise HintError(f"{source}: point {i}: radius {entry['radius']} is not > 0")
        points.append(Point(float(entry["x"]), float(entry["y"]), ab, entry.get("radius"), entry.get("frame"),
                            entry["color"]))
    return points


def _check_points(points: list[Point], width: int, height: int, source: str, frames: int | None = None) -> None:
    """Stand-in for Hints.check_points: points inside width x height, frames before ``frames``."""
    for i, p in enumerate(points):
        if not (0 <= p.x < width and 0 <= p.y < height):
            raise HintError(f"{source}: point {i}: ({p.x:g}, {p.y:g}) is outside the {width}x{height} image")
        if frames is not None and p.frame is not None and p.frame >= frames:
            raise HintError(f"{source}: point {i}: frame {p.frame} is beyond the film's end ({frames} frames)")


@pytest.fixture
def hint_format(monkeypatch):
    """Hints.parse_hints and check_points: the real ones where they exist, else the stand-ins above."""
    for name, stand_in in (("parse_hints", _parse_hints), ("check_points", _check_points)):
        if not hasattr(Hints, name):
            monkeypatch.setattr(Hints, name, stand_in, raising=False)


def hint_json(*points: dict) -> str:
    """The hint file's JSON for ``points`` (dicts with x, y, color[, radius, frame])."""
    return json.dumps({"points": list(points)})

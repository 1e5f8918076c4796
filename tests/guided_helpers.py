"""Helpers for the guided-colour tests of the web app and of films (issue 20).

  * ``fake_guided``: a Colorizer (the real class, so ``hint_inputs`` and ``Hints.local_map`` run as in use)
    around a stand-in network whose colour is exactly its hints: ab = the hinted colour on each point's
    patch, the reference's mean colour elsewhere, grey without either. It tests where hints go, with no
    trained model.
  * ``shipped_guided``: the shipped weights/colorizer.onnx, or a skip with the reason when it is not guided;
    ``shipped_torch``: the shipped weights/colorizer.pt as (model, config, ab bins), or a skip likewise;
  * ``photo_lab``: a real photo as the network sees it (L, ab).

Usage:
    colorizer = fake_guided()
    data = hint_json({"x": 3, "y": 4, "color": "#ff0000"})
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from Inference import Colorizer
from References import ModelConfig, Paths

BINS = np.array([(a, b) for a in range(-110, 111, 10) for b in range(-110, 111, 10)], np.float32)  # (Q, 2)
FAKE_SECOND = np.array([-50.0, 50.0], np.float32)  # fake_distribution's second colour: a green


def fake_guided(size: int = 64, name: str = "fake-guided.onnx") -> Colorizer:
    """A guided Colorizer whose network answers with its hints (see the module docstring); ab at ``size``."""
    def predict(L, t=None, hints=None, global_hint=None, probs=False):
        ab = np.zeros((len(L), 2, size, size), np.float32)
        if global_hint is not None:
            mean = (global_hint[:, :-1] @ BINS) / 110.0  # (B, 2) in network units
            ab += mean[:, :, None, None] * global_hint[:, -1, None, None, None]
        if hints is not None:
            m = hints[:, 2:3]
            ab = ab * (1 - m) + hints[:, :2]
        dist = fake_distribution(ab, None if hints is None else hints[:, 2])
        entropy = -(dist * np.log(dist)).sum(axis=1, keepdims=True) / np.log(len(BINS))
        return (ab, entropy, dist) if probs else (ab, entropy)
    return Colorizer(predict, ModelConfig(image_size=size, loss="classification", guided=True), "cpu", name,
                     None, BINS)


def fake_distribution(ab: np.ndarray, hinted: np.ndarray | None = None) -> np.ndarray:
    """fake_guided's colour distribution for its ab (B, 2, h, w): 0.6 on the bin nearest that colour, 0.3 on
    the bin of FAKE_SECOND (a green) and 0.1 spread evenly over all bins; where ``hinted`` (B, h, w) > 0 (a
    point's patch), sure of the hint: 0.99 on its bin."""
    lab = np.moveaxis(ab, 1, -1) * 110.0  # (B, h, w, 2)
    nearest = np.abs(lab[..., None, :] - BINS).sum(-1).argmin(-1)  # (B, h, w)
    out = np.full((ab.shape[0], len(BINS)) + ab.shape[2:], 0.1 / len(BINS), np.float32)
    second = int(np.abs(BINS - FAKE_SECOND).sum(-1).argmin())
    np.put_along_axis(out, nearest[:, None], 0.6 + 0.1 / len(BINS), axis=1)
    out[:, second] += 0.3
    if hinted is not None:
        sure = np.full_like(out, 0.01 / len(BINS))
        np.put_along_axis(sure, nearest[:, None], 0.99 + 0.01 / len(BINS), axis=1)
        out = np.where(hinted[:, None] > 0, sure, out)
    return out / out.sum(axis=1, keepdims=True)


def shipped_guided() -> Colorizer:
    """The shipped model (weights/colorizer.onnx), skipping the test when it is absent or takes no hints."""
    path = Paths().default_checkpoint
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    colorizer = Colorizer.from_checkpoint(path)
    if not colorizer.guided:
        pytest.skip(f"{path} is not a guided model (Colorizer.guided is False): hints cannot act yet")
    return colorizer


def shipped_torch(needs: str = "guided") -> tuple:
    """weights/colorizer.pt loaded on the CPU as (model, ModelConfig, ab bins (Q, 2) tensor), skipping the test
    when it is absent or its config lacks ``needs`` ("guided", or "refiner_width": a hint refiner)."""
    import torch
    from ModelIO import load_checkpoint

    path = Paths().torch_checkpoint
    if not path.is_file():
        pytest.skip(f"{path} not present")
    model, ckpt = load_checkpoint(path, torch.device("cpu"))
    if not getattr(ckpt["model_config"], needs):
        pytest.skip(f"{path} has no {needs}")
    return model, ckpt["model_config"], ckpt["extras"]["ab_bins"]


def photo_lab(name: str, size: int) -> tuple:
    """A real colour photo (conftest.real_photo) squashed to ``size`` x ``size`` as the network sees it:
    (L (1, 1, size, size), ab (1, 2, size, size)) torch tensors in [-1, 1]."""
    from conftest import real_photo
    from ImageIO import to_float
    from LoadData import normalize_lab, resize_to_square, rgb_to_lab, to_tensor
    rgb = resize_to_square(to_tensor(to_float(real_photo(name, 256))), size)
    return normalize_lab(rgb_to_lab(rgb[None]))


def hint_json(*points: dict) -> str:
    """The hint file's JSON for ``points`` (dicts with x, y, color[, radius, frame])."""
    return json.dumps({"points": list(points)})

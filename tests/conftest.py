"""Shared fixtures: real photos (scikit-image's bundled samples), a tiny model and its checkpoint, a tiny guided one.

Nothing here needs ../shared or the network; tests that use ../shared skip without it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ModelIO import build_model, save_checkpoint  # noqa: E402
from References import ModelConfig  # noqa: E402

SHARED = ROOT.parent / "shared"
SHARED_WEIGHTS = SHARED / "weights" / "vgg16_features_imagenet.pth"
SHARED_CORPUS = SHARED / "data" / "colorize-corpus"

needs_shared_weights = pytest.mark.skipif(not SHARED_WEIGHTS.is_file(), reason=f"{SHARED_WEIGHTS} not present (only in the dev environment)")
needs_shared_corpus = pytest.mark.skipif(not SHARED_CORPUS.is_dir(), reason=f"{SHARED_CORPUS} not present (only in the dev environment)")

COLOUR_SAMPLES = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "retina",
                  "immunohistochemistry", "hubble_deep_field")

TINY = ModelConfig(image_size=64, loss="huber", widths=(("relu1_2", 8), ("relu2_2", 16), ("relu3_3", 16),
                                          ("relu4_3", 32), ("relu5_3", 32)), global_width=32)


def load_script(name: str):
    """scripts/<name>.py imported as a module (the scripts are not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def real_photo(name: str, max_side: int = 160) -> np.ndarray:
    """A real colour photo from skimage.data as uint8 RGB, downscaled to ``max_side``."""
    from skimage import data
    arr = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    im = Image.fromarray(arr[..., :3])
    im.thumbnail((max_side, max_side), Image.LANCZOS)
    return np.asarray(im)


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory) -> Path:
    """A folder of 8 real colour photos (JPEG and PNG) of different sizes."""
    d = tmp_path_factory.mktemp("photos")
    for i, name in enumerate(COLOUR_SAMPLES):
        Image.fromarray(real_photo(name)).save(d / f"{name}.{'jpg' if i % 2 else 'png'}", quality=95)
    return d


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-weight tiny regression model saved as a checkpoint (untrained: tests check plumbing)."""
    torch.manual_seed(0)
    model = build_model(TINY, "none")
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model, TINY, epoch=0, best_metric=1.0)
    return path


@pytest.fixture(scope="session")
def guided_checkpoint(tmp_path_factory) -> Path:
    """A random-weight tiny guided classification model's checkpoint (plumbing only: its hints have no learned
    effect; the output follows points through PointSpread)."""
    import dataclasses

    import Quantization

    cfg = dataclasses.replace(TINY, loss="classification", guided=True)
    torch.manual_seed(0)
    bins = Quantization.ab_bins(cfg.ab_grid)
    path = tmp_path_factory.mktemp("guided") / "guided.pt"
    save_checkpoint(path, build_model(cfg, "none", len(bins)), cfg, extras={"ab_bins": bins})
    return path

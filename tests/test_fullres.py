"""The strip-wise full-resolution path: same pixels as the float reference, L kept, in gamut, memory bounded."""
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import FullResolution as FR
from conftest import COLOUR_SAMPLES, real_photo
from LoadData import (denormalize_lab, fit_to_gamut, lab_to_rgb, normalize_lab, resize_to_square,
                      rgb_to_lab, to_float, to_tensor)


def reference(img: np.ndarray, ab_small: torch.Tensor) -> np.ndarray:
    """The whole-image float path the strips replace: upsample ab, keep L, bisect the gamut, round."""
    rgb = to_tensor(to_float(img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)))
    L = rgb_to_lab(rgb)[None, :1]
    ab = F.interpolate(ab_small[None], size=L.shape[-2:], mode="bilinear", align_corners=False)
    out = lab_to_rgb(fit_to_gamut(denormalize_lab((L - 50) / 50, ab)))[0]
    return (out.permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).numpy()


def smooth_ab(seed: int, strength: float = 0.6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ab = (torch.rand(1, 2, 64, 64, generator=g) * 2 - 1) * strength  # chroma up to 66: many pixels out of gamut
    return F.avg_pool2d(F.pad(ab, (2, 2, 2, 2), mode="replicate"), 5, 1)[0]


@pytest.mark.parametrize("name", COLOUR_SAMPLES[:3])
@pytest.mark.parametrize("grey", [False, True])
def test_strips_match_the_float_reference_within_one_level(name, grey, monkeypatch):
    monkeypatch.setattr(FR, "STRIP_PIXELS", 5000)  # many strips, odd boundaries
    img = real_photo(name, 203)
    if grey:
        img = np.asarray(np.round(img.mean(axis=2)), np.uint8)
    ab = smooth_ab(len(name))
    ours, ref = FR.recombine_image(img, ab.numpy()).astype(int), reference(img, ab).astype(int)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1
    # L is the input's within 8-bit rounding, and every pixel is displayable without clipping L
    L_in = rgb_to_lab(to_tensor(to_float(img if img.ndim == 3 else np.repeat(img[..., None], 3, 2))))[0]
    L_out = rgb_to_lab(to_tensor(ours.astype(np.float32) / 255))[0]
    assert (L_in - L_out).abs().max() < 1.0


def test_working_L_equals_the_whole_image_resize(monkeypatch):
    monkeypatch.setattr(FR, "STRIP_PIXELS", 4000)
    img = real_photo("coffee", 300)
    want = normalize_lab(rgb_to_lab(resize_to_square(to_tensor(img / 255.0), 96)))[0]
    assert torch.allclose(torch.from_numpy(FR.working_L(img, 96)[0]), want, atol=1e-5)


def test_memory_is_the_output_plus_strips():
    h, w = 3000, 4000  # 12 MP greyscale; the whole-image float path holds ~100 bytes per pixel
    img = np.tile(np.arange(w, dtype=np.uint8), (h, 1))
    ab = smooth_ab(1).numpy()
    tracemalloc.start()
    out = FR.recombine_image(img, ab)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert out.shape == (h, w, 3)
    assert peak < out.nbytes + 160 * 2 ** 20, f"peak {peak / 2 ** 20:.0f} MiB"


def test_rows_longer_than_a_strip_are_cut_into_tiles(monkeypatch):
    """A row longer than STRIP_PIXELS is recombined in tiles along it (memory bounded for any shape), with
    the same result as in one piece."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (3, 5000, 3), dtype=np.uint8)
    ab = rng.uniform(-0.5, 0.5, (2, 8, 8)).astype(np.float32)
    whole = FR.recombine_image(img, ab)
    assert all((r1 - r0) * (c1 - c0) <= 1000 for r0, r1, c0, c1 in FR.tiles(3, 5000, 1000))
    assert sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in FR.tiles(3, 5000, 1000)) == 3 * 5000
    seen = []
    real = FR.image_fy
    monkeypatch.setattr(FR, "image_fy", lambda part: seen.append(part.shape) or real(part))
    monkeypatch.setattr(FR, "STRIP_PIXELS", 1000)
    assert np.array_equal(FR.recombine_image(img, ab), whole)
    assert max(h * w for h, w, _ in seen) <= 1000

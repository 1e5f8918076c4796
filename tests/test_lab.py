"""Lab conversion and scaling, checked against scikit-image on real photos."""
import numpy as np
import pytest
import torch
from skimage import color

from conftest import COLOUR_SAMPLES, real_photo
from LoadData import (denormalize_lab, fit_to_gamut, lab_to_rgb, lab_to_rgb_unclipped, normalize_lab, rgb_to_lab,
                      to_tensor)


@pytest.mark.parametrize("name", COLOUR_SAMPLES[:4])
def test_rgb_to_lab_matches_skimage(name):
    rgb = real_photo(name).astype(np.float32) / 255.0
    ours = rgb_to_lab(to_tensor(rgb)).permute(1, 2, 0).numpy()
    assert np.abs(ours - color.rgb2lab(rgb)).max() < 1e-3


@pytest.mark.parametrize("name", COLOUR_SAMPLES[:4])
def test_lab_to_rgb_matches_skimage_and_round_trips(name):
    rgb = real_photo(name).astype(np.float32) / 255.0
    lab = color.rgb2lab(rgb)
    ours = lab_to_rgb(torch.from_numpy(lab).permute(2, 0, 1).float()).permute(1, 2, 0).numpy()
    assert np.abs(ours - color.lab2rgb(lab)).max() < 1e-3
    assert np.abs(ours - rgb).max() < 1e-3


def test_batched_conversion_equals_per_image():
    rgb = torch.stack([to_tensor(real_photo(n, 64)[:40, :40] / 255.0) for n in COLOUR_SAMPLES[:3]])
    batched = rgb_to_lab(rgb)
    for i in range(3):
        assert torch.allclose(batched[i], rgb_to_lab(rgb[i]), atol=1e-5)


def test_normalised_units_are_in_range_and_invert():
    lab = rgb_to_lab(to_tensor(real_photo("coffee") / 255.0))
    L, ab = normalize_lab(lab)
    assert L.shape[0] == 1 and ab.shape[0] == 2
    assert L.min() >= -1 and L.max() <= 1 and ab.abs().max() <= 1
    assert torch.allclose(denormalize_lab(L, ab), lab, atol=1e-4)


def test_fit_to_gamut_keeps_L_and_makes_colours_displayable():
    lab = rgb_to_lab(to_tensor(real_photo("astronaut") / 255.0))
    lab[1:] *= 3.0  # push most pixels out of gamut
    fitted = fit_to_gamut(lab)
    assert torch.equal(fitted[0], lab[0])
    rgb = lab_to_rgb_unclipped(fitted)
    assert rgb.min() > -1e-3 and rgb.max() < 1 + 1e-3
    # hue is kept: chroma only shrinks
    assert (fitted[1:].norm(dim=0) <= lab[1:].norm(dim=0) + 1e-4).all()
    assert torch.allclose(rgb_to_lab(rgb.clamp(0, 1))[0], lab[0], atol=0.05)

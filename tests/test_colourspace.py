"""ColourSpace, the one sRGB <-> Lab and gamut-fit implementation, through every path that uses it.

The numpy path (ColourSpace itself and FullResolution, the light install's) and the torch path
(LoadData's wrappers, training) are each checked against scikit-image, on random colours and on the
whole 8-bit grey ramp; round trips, the gamut fit's promises (in gamut, L unchanged, hue kept, chroma
shrunk no more than needed), and that both paths compute the same numbers. The last test fails if a
module other than ColourSpace (and References, which holds the constants) spells the formulas again.
"""
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import color

import ColourSpace as CS
import FullResolution as FR
import LoadData as LD
from conftest import ROOT

RNG = np.random.default_rng(23)
RANDOM_RGB = RNG.random((3, 64, 80))  # (3, H, W) float64 in [0, 1)
GREY_RAMP = np.repeat((np.arange(256) / 255.0)[None, None], 3, axis=0)  # (3, 1, 256): every 8-bit grey level


def skimage_lab(rgb_chw: np.ndarray) -> np.ndarray:
    return color.rgb2lab(rgb_chw.transpose(1, 2, 0)).transpose(2, 0, 1)


def skimage_rgb(lab_chw: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "negative Z values" for out-of-gamut Lab: it floors them, as we do
        return color.lab2rgb(lab_chw.transpose(1, 2, 0)).transpose(2, 0, 1)


def lab_paths(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Lab (3, H, W) of the same sRGB through each way the project computes it."""
    return {
        "ColourSpace, float64": CS.rgb_to_lab(rgb),
        "ColourSpace, float32": CS.rgb_to_lab(rgb.astype(np.float32)),
        "ColourSpace, torch float64": CS.rgb_to_lab(torch.from_numpy(rgb)).numpy(),
        "LoadData.rgb_to_lab": LD.rgb_to_lab(torch.from_numpy(rgb)).numpy(),
        "FullResolution.lab_of": FR.lab_of(rgb, channels_first=True),
    }


@pytest.mark.parametrize("rgb", [RANDOM_RGB, GREY_RAMP], ids=["random", "grey ramp"])
def test_rgb_to_lab_matches_skimage_on_every_path(rgb):
    want = skimage_lab(rgb)
    errors = {name: np.abs(lab - want).max() for name, lab in lab_paths(rgb).items()}
    # float32: a = 500 (fx - fy) amplifies an ulp of f
    wrong = {name: err for name, err in errors.items() if err >= (1e-9 if "64" in name else 2e-4)}
    assert not wrong, wrong


@pytest.mark.parametrize("levels", [256, 65536])
def test_the_full_resolution_tables_give_skimage_L(levels):
    """FullResolution's grey and RGB tables (f(Y) per code value) are the formulas' values: L = 116 f - 16."""
    codes = np.arange(0, levels, max(1, levels // 4096), dtype=np.uint8 if levels == 256 else np.uint16)
    want = skimage_lab(np.repeat((codes / (levels - 1.0))[None, None], 3, axis=0))[0, 0]
    for img in (codes[None], np.repeat(codes[None, :, None], 3, axis=2)):  # grey (1, N), RGB (1, N, 3)
        fy, Y = FR.image_fy(img)
        assert np.abs(116 * fy[0] - 16 - want).max() < 2e-4
        assert np.abs(CS.f_lab_inv(fy) - Y).max() < 1e-6


def test_lab_to_rgb_matches_skimage_on_every_path():
    lab = np.stack([RNG.uniform(0, 100, (40, 50)), RNG.uniform(-110, 110, (40, 50)), RNG.uniform(-110, 110, (40, 50))])
    want = skimage_rgb(lab)  # clipped, as ours
    assert np.abs(CS.lab_to_rgb(lab) - want).max() < 1e-9
    assert np.abs(CS.lab_to_rgb(torch.from_numpy(lab)).numpy() - want).max() < 1e-9
    assert np.abs(LD.lab_to_rgb(torch.from_numpy(lab)).numpy() - want).max() < 1e-5
    unclipped = CS.lab_to_rgb(lab, clip=False)
    assert unclipped.min() < -0.1 and unclipped.max() > 1.1  # the random Lab really leaves the gamut


@pytest.mark.parametrize("rgb", [RANDOM_RGB, GREY_RAMP], ids=["random", "grey ramp"])
def test_round_trip(rgb):
    assert np.abs(CS.lab_to_rgb(CS.rgb_to_lab(rgb)) - rgb).max() < 1e-12
    t = torch.from_numpy(rgb).float()
    assert (LD.lab_to_rgb(LD.rgb_to_lab(t)) - t).abs().max() < 1e-5
    # FullResolution's uint8 path: the image's own L with its own ab at full size gives the image back
    img = np.round(rgb.transpose(1, 2, 0) * 255).astype(np.uint8)
    ab = FR.lab_of(img / np.float32(255))[1:] / 110
    assert np.abs(FR.recombine_image(img, ab).astype(int) - img).max() <= 1


def out_of_gamut_lab() -> np.ndarray:
    """(3, 64, 80) float32 Lab of random colours with chroma x1.5: about 3 in 4 of them not displayable."""
    return (CS.rgb_to_lab(RANDOM_RGB) * np.array([1, 1.5, 1.5])[:, None, None]).astype(np.float32)


def in_gamut(lab: np.ndarray, tol: float = 2 * CS.GAMUT_TOL) -> np.ndarray:
    """(H, W) bool: Lab (3, H, W) is an sRGB colour within ``tol`` (computed in float64)."""
    rgb = CS.lab_to_rgb(np.asarray(lab, np.float64), clip=False)
    return ((rgb >= -tol) & (rgb <= 1 + tol)).all(axis=0)


@pytest.mark.parametrize("path", ["numpy", "torch"])
def test_gamut_fit_lands_inside_keeps_L_and_hue_and_shrinks_no_more_than_needed(path):
    lab = out_of_gamut_lab()
    was_in = in_gamut(lab)
    assert 0.2 < was_in.mean() < 0.8  # both kinds of pixel are exercised
    fitted = CS.fit_to_gamut(lab) if path == "numpy" else LD.fit_to_gamut(torch.from_numpy(lab)).numpy()
    assert np.array_equal(fitted[0], lab[0])  # L bit for bit
    assert np.array_equal(fitted[:, was_in], lab[:, was_in])  # displayable colours untouched
    # hue: ab only scales by s in [0, 1], so the cross product is 0 and the dot product >= 0
    a, b, fa, fb = lab[1], lab[2], fitted[1], fitted[2]
    assert np.abs(a * fb - b * fa).max() < 1e-3 * np.abs(a * b).max()
    assert (a * fa + b * fb >= 0).all() and (np.hypot(fa, fb) <= np.hypot(a, b) + 1e-4).all()
    assert in_gamut(fitted).all()
    # no more than needed: one bisection step more chroma (scale + 2**-12) is out of gamut, even without
    # the fit's tolerance (so float32 vs float64 rounding cannot decide it)
    bad = ~was_in
    scale = np.hypot(fa, fb)[bad] / np.hypot(a, b)[bad]
    step_more = lab[:, bad] * np.stack([np.ones_like(scale), scale + 2.0 ** -12, scale + 2.0 ** -12])
    assert not in_gamut(step_more[:, :, None], tol=0.0).any()


def test_full_resolution_fits_the_same_gamut():
    """FullResolution's strips (its tables + ColourSpace.fit_gamut) equal LoadData's Lab path within one level."""
    img = np.round(RANDOM_RGB.transpose(1, 2, 0) * 255).astype(np.uint8)
    ab = FR.lab_of(img / np.float32(255))[1:] * 3 / 110  # the image's own ab, tripled: mostly out of gamut
    ours = FR.recombine_image(img, ab).astype(int)
    lab = LD.rgb_to_lab(torch.from_numpy(img / np.float32(255)).permute(2, 0, 1))
    lab[1:] = torch.from_numpy(ab * 110)
    ref = (LD.lab_to_rgb(LD.fit_to_gamut(lab)).permute(1, 2, 0).numpy() * 255 + 0.5).astype(int)
    assert np.abs(ours - ref).max() <= 1


def test_torch_and_numpy_paths_compute_the_same_numbers():
    """The shared code, not two copies: float64 agrees to rounding; float32 differs only by the cube root
    (numpy's cbrt, torch's power), a few ulps."""
    rgb = RANDOM_RGB
    paths = lab_paths(rgb)
    assert np.abs(paths["ColourSpace, torch float64"] - paths["ColourSpace, float64"]).max() < 1e-11
    assert np.abs(paths["LoadData.rgb_to_lab"] - paths["ColourSpace, float32"]).max() < 2e-4
    assert np.array_equal(paths["FullResolution.lab_of"], paths["ColourSpace, float32"])
    lab = out_of_gamut_lab()
    assert np.abs(LD.lab_to_rgb_unclipped(torch.from_numpy(lab)).numpy() - CS.lab_to_rgb(lab, clip=False)).max() < 1e-5
    assert np.abs(LD.fit_to_gamut(torch.from_numpy(lab)).numpy() - CS.fit_to_gamut(lab)).max() < 1e-5


def test_arrays_keep_their_kind_dtype_and_shape():
    for x in (RANDOM_RGB, RANDOM_RGB.astype(np.float32), torch.from_numpy(RANDOM_RGB), torch.rand(2, 3, 5, 7)):
        lab = CS.rgb_to_lab(x)
        assert type(lab) is type(x) and lab.dtype == x.dtype and lab.shape == x.shape
        assert type(CS.lab_to_rgb(lab)) is type(x) and CS.fit_to_gamut(lab * 3).dtype == x.dtype
    assert CS.rgb_to_lab(RANDOM_RGB.transpose(1, 2, 0), axis=-1).shape == (64, 80, 3)
    with pytest.raises(ValueError, match=r"expected 3 channels on axis -3, got shape \(4, 2, 2\)"):
        CS.rgb_to_lab(np.zeros((4, 2, 2)))


def test_tensors_keep_autograd():
    """Tensors go through torch's own ops, so gradients flow, and black (0, where the cube root's slope is
    infinite in the branch that is not taken) gives finite ones."""
    rgb = torch.rand(3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    rgb[:, 0, :3] = 0.0
    rgb.requires_grad_(True)
    CS.lab_to_rgb(CS.rgb_to_lab(rgb), clip=False).sum().backward()
    assert torch.isfinite(rgb.grad).all() and torch.allclose(rgb.grad, torch.ones_like(rgb))  # d(round trip) = 1
    assert torch.autograd.gradcheck(CS.rgb_to_lab, (rgb[:, 1:].detach().requires_grad_(True),))


FORMULA = re.compile(r"12\.92|1\.055|0\.055|\*\* ?2\.4|pow\(2\.4|7\.787|0\.008856|0\.2068966|cbrt|xyz_from_rgb|"
                     r"xyz_kappa|xyz_epsilon|lab_f_threshold|srgb_threshold|linear_threshold|LAB\.white|/ ?116|116\.0")


def test_no_second_implementation_of_the_formulas():
    """Only ColourSpace.py (and References.py, the constants) may spell the sRGB curve, the matrices or Lab's f."""
    files = [p for p in ROOT.rglob("*.py") if not {".venv", "build", ".git"} & set(p.parts)]
    offenders = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in files
                 if p.name not in ("ColourSpace.py", "References.py", Path(__file__).name)
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if FORMULA.search(line)]
    assert not offenders, "colour formulas outside ColourSpace.py:\n" + "\n".join(offenders)

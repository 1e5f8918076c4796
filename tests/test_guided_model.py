"""The guided model: hint layers that start at zero, hints that act, per-image independence, simulated
training hints, and the shipped release obeying a point and a reference (issue 20)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import Quantization
from guided_helpers import photo_lab, shipped_torch
from DecoderLayers import Hints
from HintSampling import histogram, sample_hints
from ModelIO import build_model, decode_prediction
from References import LAB, ModelConfig, TrainConfig

SMALL = ModelConfig(image_size=64, widths=(("relu1_2", 8), ("relu2_2", 16), ("relu3_3", 16), ("relu4_3", 32),
                                           ("relu5_3", 32)), global_width=32)


def small_model(guided: bool, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_model(dataclasses.replace(SMALL, guided=guided, **kw), "none").eval()


def red_patch(n: int, size: int, where: tuple[int, int, int, int] = (20, 30, 20, 30)) -> Hints:
    """A strong red patch on image 0 only; no global hint."""
    local = torch.zeros(n, 3, size, size)
    y0, y1, x0, x1 = where
    local[0, 0, y0:y1, x0:x1], local[0, 1, y0:y1, x0:x1], local[0, 2, y0:y1, x0:x1] = 0.6, 0.45, 1.0
    return Hints(local, torch.zeros(n, Quantization.num_bins(SMALL.ab_grid) + 1))


@pytest.mark.parametrize("features", [False, True])
def test_new_hint_layers_leave_the_model_as_it_was(features):
    """A guided decoder loaded from an unguided one gives the same logits, with no hints and with any hints
    (the new layers start at zero), so fine-tuning starts from the shipped model."""
    plain, guided = small_model(False), small_model(True, seed=1, hint_features=features)
    guided.load_state_dict(plain.state_dict(), strict=False)
    L = torch.rand(2, 1, 64, 64) * 2 - 1
    want = plain(L)
    assert torch.equal(guided(L), want)
    assert torch.equal(guided(L, red_patch(2, 64)), want)


@pytest.mark.parametrize("features", [False, True])
def test_hints_steer_only_their_own_image(features):
    """Once the hint layers hold weights, a point changes its image's colours and no other image's in the batch;
    all-zero hints are exactly the automatic colours."""
    model = small_model(True, hint_features=features)
    for m in model.decoder.modules():
        if isinstance(m, torch.nn.Conv2d) and m.weight.abs().sum() == 0:
            torch.nn.init.normal_(m.weight, std=0.5)
    L = torch.rand(2, 1, 64, 64) * 2 - 1
    auto = model(L)
    hinted = model(L, red_patch(2, 64))
    zeros = model(L, Hints(torch.zeros(2, 3, 64, 64), torch.zeros(2, auto.shape[1] + 1)))
    assert torch.equal(zeros, auto)
    assert torch.equal(hinted[1], auto[1])
    assert (hinted[0] - auto[0]).abs().max() > 1e-2


def test_a_global_hint_reaches_the_colours():
    """The global hint's logit shift favours the reference's colours once its gain is not zero."""
    model = small_model(True)
    model.decoder.global_hint.gain.data.fill_(1.0)
    bins = Quantization.ab_bins(SMALL.ab_grid)
    L = torch.zeros(1, 1, 64, 64)
    glob = torch.zeros(1, len(bins) + 1)
    target = int(((bins - torch.tensor([40.0, 50.0])) ** 2).sum(1).argmin())
    glob[0, target], glob[0, -1] = 1.0, 1.0
    auto = decode_prediction(model(L), SMALL, bins)
    steered = decode_prediction(model(L, Hints(torch.zeros(1, 3, 64, 64), glob)), SMALL, bins)
    goal = bins[target].view(1, 2, 1, 1) / LAB.ab_scale
    assert (steered - goal).abs().mean() < (auto - goal).abs().mean() - 0.05


def test_training_hints_are_seeded_and_follow_the_mix():
    """Simulated points: the same seed gives the same hints; about hint_none of the crops get none; each patch
    holds its own mean colour; the global hint is a distribution with its flag."""
    bins = Quantization.ab_bins(10)
    ab = torch.rand(2, 64, 64) - 0.5
    tcfg = TrainConfig()
    a = sample_hints(ab, bins, tcfg, torch.Generator().manual_seed(3))
    b = sample_hints(ab, bins, tcfg, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    draws = [sample_hints(ab, bins, tcfg, torch.Generator().manual_seed(i)) for i in range(300)]
    none = sum(not bool(local[2].any()) for local, _ in draws) / len(draws)
    assert abs(none - tcfg.hint_none) < 0.1
    given = [g for _, g in draws if g[-1] == 1]
    assert abs(len(given) / len(draws) - (tcfg.hint_global_self + tcfg.hint_global_window)) < 0.1
    assert all(abs(float(g[:-1].sum()) - 1) < 1e-5 for g in given)
    flat = torch.full((2, 64, 64), 0.2)
    local, glob = sample_hints(flat, bins, dataclasses.replace(tcfg, hint_none=0.0), torch.Generator().manual_seed(0))
    hinted = local[2] > 0
    assert hinted.any() and torch.allclose(local[0][hinted], torch.tensor(0.2))
    assert torch.equal(histogram(flat, bins)[:-1] > 0, torch.nn.functional.one_hot(
        ((bins - 22.0) ** 2).sum(1).argmin(), len(bins)).bool())


@pytest.fixture(scope="module")
def release():
    return shipped_torch("guided")


@torch.no_grad()
def test_the_release_obeys_points_and_a_reference(release):
    """Ten points simulated from a real photo pull the shipped model's colours at those points to within a few
    Lab units of the points' colours (the automatic colours are far off there), and the photo's own colours as a
    reference bring its ab closer to the truth. Zeroing the hint inputs inside the model fails this test."""
    model, cfg, bins = release
    L, ab = photo_lab("coffee", cfg.image_size)
    # ten 5 x 5 points on the most colourful places of a coarse grid, each with its patch's mean colour
    chroma = (ab[0] * LAB.ab_scale).norm(dim=0)
    cells = [(float(chroma[y:y + 5, x:x + 5].mean()), y, x) for y in range(0, ab.shape[-2] - 5, 12)
             for x in range(0, ab.shape[-1] - 5, 12)]
    local = torch.zeros(1, 3, cfg.image_size, cfg.image_size)
    for _, y, x in sorted(cells, reverse=True)[:10]:
        local[0, :2, y:y + 5, x:x + 5] = ab[0, :, y:y + 5, x:x + 5].mean(dim=(1, 2))[:, None, None]
        local[0, 2, y:y + 5, x:x + 5] = 1.0
    glob = torch.zeros(1, len(bins) + 1)
    auto = decode_prediction(model(L), cfg, bins, size=ab.shape[-2:])
    pointed = decode_prediction(model(L, Hints(local, glob)), cfg, bins, size=ab.shape[-2:])
    mask = local[0, 2] > 0
    err = lambda pred: float(((pred[0] - local[0, :2]) * LAB.ab_scale).norm(dim=0)[mask].mean())  # noqa: E731
    assert err(pointed) < 10.0 and err(pointed) < 0.65 * err(auto), (err(pointed), err(auto))
    glob[0] = histogram(ab[0], bins)
    referenced = decode_prediction(model(L, Hints(torch.zeros_like(local), glob)), cfg, bins, size=ab.shape[-2:])
    truth_err = lambda pred: float((pred - ab).abs().mean() * LAB.ab_scale)  # noqa: E731
    assert truth_err(referenced) < truth_err(auto) - 0.5, (truth_err(referenced), truth_err(auto))

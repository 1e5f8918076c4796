"""The hint refiner (RefinerLayers, Refining): exactly nothing without hints, a shift that lands on its target,
the simulated training hints, a short training run on the CPU, and the shipped refiner doing better than the
decoder alone (issue 20)."""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest
import torch

import Quantization
from guided_helpers import photo_lab, shipped_torch
from DecoderLayers import ColorizationModel, Hints
from Hints import ab_histogram
from ModelIO import build_model, decode_prediction, load_checkpoint, load_generator, save_checkpoint
from References import LAB, ModelConfig, Paths, TrainConfig
from RefinerLayers import HintRefiner, RefinedDecoder
from Refining import chroma_gap, fit_refiner, histograms, point_maps, refined_loss, simulate_hints

SMALL = ModelConfig(image_size=64, widths=(("relu1_2", 8), ("relu2_2", 16), ("relu3_3", 16), ("relu4_3", 32),
                                           ("relu5_3", 32)), global_width=32, guided=True)
BINS = Quantization.ab_bins(10)


def refined_small(seed: int = 0) -> tuple[ColorizationModel, ColorizationModel]:
    """(a small guided model with a refiner whose every weight is random, the same model without the refiner)."""
    torch.manual_seed(seed)
    model = build_model(dataclasses.replace(SMALL, refiner_width=4), "none").eval()
    model.decoder.refiner.bins.copy_(BINS)
    for p in model.decoder.parameters():
        torch.nn.init.normal_(p, std=0.3)  # the hint layers and the refiner's head too, which start at zero
    return model, ColorizationModel(model.encoder, model.decoder.base)


def one_point(n: int, size: int = 64) -> Hints:
    local = torch.zeros(n, 3, size, size)
    local[0, 0, 10:14, 10:14], local[0, 1, 10:14, 10:14], local[0, 2, 10:14, 10:14] = 0.5, 0.3, 1.0
    return Hints(local, torch.zeros(n, len(BINS) + 1))


@torch.no_grad()
def test_without_hints_the_refiner_changes_nothing():
    """No hints, all-zero hints, or hints on another image of the batch: the logits are exactly the unrefined
    model's. Hints on an image do change it."""
    model, base = refined_small()
    L = torch.rand(2, 1, 64, 64) * 2 - 1
    zeros = Hints(torch.zeros(2, 3, 64, 64), torch.zeros(2, len(BINS) + 1))
    assert torch.equal(model(L), base(L))
    assert torch.equal(model(L, zeros), base(L, zeros))
    hinted, unrefined = model(L, one_point(2)), base(L, one_point(2))
    assert torch.equal(hinted[1], unrefined[1])
    assert (hinted[0] - unrefined[0]).abs().max() > 1e-3
    glob = torch.zeros(2, len(BINS) + 1)
    glob[1, :-1], glob[1, -1] = 1.0 / len(BINS), 1.0  # a reference alone also counts as a hint
    assert not torch.equal(model(L, Hints(zeros.local, glob))[1], base(L, Hints(zeros.local, glob))[1])


@torch.no_grad()
def test_the_refiner_is_skipped_when_no_image_has_a_hint(monkeypatch):
    """A batch without hints never runs the refiner (automatic colour costs what it did without one), one hinted
    image makes it run; the shipped ONNX graph does the same with an If node."""
    model, _ = refined_small()
    calls = []
    real = model.decoder.refiner.forward
    monkeypatch.setattr(model.decoder.refiner, "forward", lambda *a: calls.append(1) or real(*a))
    L = torch.rand(2, 1, 64, 64) * 2 - 1
    model(L, Hints(torch.zeros(2, 3, 64, 64), torch.zeros(2, len(BINS) + 1)))
    assert calls == []
    model(L, one_point(2))
    assert calls == [1]
    onnx = pytest.importorskip("onnx")
    from References import Paths
    path = Paths().default_checkpoint
    if path.is_file() and shipped_torch("refiner_width"):
        assert "If" in {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}


def test_an_exported_refined_model_branches_on_hints(tmp_path):
    """A small refined model exported to ONNX: the graph holds an If, and ONNX Runtime gives the unrefined colours
    for a batch without hints and the refined ones for a batch with a point, as torch does."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from Export import export_onnx
    torch.manual_seed(0)
    cfg = dataclasses.replace(SMALL, refiner_width=4, temperature=0.18)
    model = build_model(cfg, "none").eval()  # default initialisation: a calm network, so float16 weights agree
    model.decoder.refiner.bins.copy_(BINS)
    torch.nn.init.normal_(model.decoder.refiner.head.weight, std=0.05)
    base = ColorizationModel(model.encoder, model.decoder.base)
    prior = torch.full((len(BINS),), 1.0 / len(BINS))
    save_checkpoint(tmp_path / "refined.pt", model, cfg, extras={"ab_bins": BINS, "ab_prior": prior})
    export_onnx(tmp_path / "refined.pt", tmp_path / "refined.onnx")
    assert "If" in {n.op_type for n in onnx.load(str(tmp_path / "refined.onnx")).graph.node}
    session = ort.InferenceSession(str(tmp_path / "refined.onnx"), providers=["CPUExecutionProvider"])
    L = torch.rand(2, 1, 64, 64) * 2 - 1
    for hints, net in ((Hints(torch.zeros(2, 3, 64, 64), torch.zeros(2, len(BINS) + 1)), base),
                       (one_point(2), model)):
        want = decode_prediction(net(L, hints), cfg, BINS)
        got = session.run(["ab"], {"L": L.numpy(), "hints": hints.local.numpy(), "global_hint": hints.global_.numpy()})
        assert float((torch.from_numpy(got[0]) - want).abs().max()) * LAB.ab_scale < 0.05
    unrefined = decode_prediction(base(L, one_point(2)), cfg, BINS)
    assert float((decode_prediction(model(L, one_point(2)), cfg, BINS) - unrefined)[0].abs().max()) > 1e-3


@torch.no_grad()
def test_a_strong_shift_lands_the_decoded_colour_on_its_target():
    """With the head set to 'target = decoded colour + (20, -15) Lab (25 units away), strength 3', decoding the
    refined logits lands within the bins' spacing of that target (a strong shift snaps to the nearest bins: 10
    Lab units apart); with strength ~0 the colour stays where it was."""
    refiner = HintRefiner(len(BINS), 0.18, width=4)
    refiner.bins.copy_(BINS)
    torch.manual_seed(0)
    logits = torch.randn(1, len(BINS), 16, 16) * 0.5
    L = torch.zeros(1, 1, 32, 32)
    local = torch.zeros(1, 3, 32, 32)
    local[0, 2, 0, 0] = 1.0
    before = Quantization.annealed_mean(logits, BINS, 0.18)
    shift = torch.tensor([20.0, -15.0])[None, :, None, None] / LAB.ab_scale
    for raw, want, mean_err in ((math.log(math.expm1(3.0)), before + shift, 4.5), (-30.0, before, 0.01)):
        refiner.head.weight.zero_()
        refiner.head.bias.copy_(torch.tensor([shift[0, 0, 0, 0], shift[0, 1, 0, 0], raw]))
        after = Quantization.annealed_mean(refiner(logits, L, Hints(local, torch.zeros(1, len(BINS) + 1))), BINS, 0.18)
        inside = (want.abs() < 0.6).all(dim=1)  # targets well inside the bins' gamut
        err = ((after - want) * LAB.ab_scale).norm(dim=1)[inside]
        assert float(err.mean()) < mean_err and float(err.max()) < 2 * mean_err, (raw, float(err.mean()))


def test_simulated_points_paint_each_patch_with_its_mean_colour():
    """Crops not asked for get no points; a flat crop's points carry its colour. On a crop whose a rises along x
    and b along y, a patch's mean is the ramp at the patch's centre: each painted pixel's (a, b) must be the ramps
    at one point within half a patch (<= 4 px) of it, on the half-pixel grid of patch centres."""
    g = torch.Generator().manual_seed(3)
    S = 48
    step = 1.0 / (S - 1)
    ramp = torch.linspace(-0.5, 0.5, S)
    ab = torch.stack([torch.full((2, S, S), 0.3),
                      torch.stack((ramp[None, :].expand(S, S), ramp[:, None].expand(S, S))),
                      torch.full((2, S, S), -0.2)])
    maps = point_maps(ab, g, torch.tensor([True, True, False]))
    m = maps[:, 2] > 0
    assert m[0].any() and m[1].any() and not m[2].any()
    assert torch.allclose(maps[0, :2][:, m[0]], torch.tensor(0.3))
    ys, xs = torch.nonzero(m[1], as_tuple=True)
    cx = (maps[1, 0][m[1]] + 0.5) / step  # the centre each pixel's colour says, in pixels
    cy = (maps[1, 1][m[1]] + 0.5) / step
    assert float((cx - xs).abs().max()) <= 4 + 1e-3 and float((cy - ys).abs().max()) <= 4 + 1e-3
    assert float(((cx * 2) - (cx * 2).round()).abs().max()) < 1e-3  # centres lie on whole or half pixels
    assert float(((cy * 2) - (cy * 2).round()).abs().max()) < 1e-3
    assert torch.equal(maps[:, :2] * m[:, None], maps[:, :2])  # a*m, b*m: zero off the points


def test_training_histograms_are_the_inference_reference_hint():
    """The batched histogram over a whole crop equals Hints.ab_histogram (what a reference photo becomes)."""
    ab = torch.rand(2, 2, 16, 16) * 1.2 - 0.6
    got = histograms(ab, torch.ones(2, 16, 16), BINS)
    for i in range(2):
        assert torch.allclose(got[i], torch.from_numpy(ab_histogram(ab[i].numpy() * LAB.ab_scale, BINS.numpy())),
                              atol=1e-6)


def test_every_simulated_crop_gets_a_hint_in_the_documented_mix():
    g = torch.Generator().manual_seed(0)
    hints = simulate_hints(torch.rand(600, 2, 16, 16) - 0.5, BINS, g)
    points = hints.local[:, 2].amax(dim=(1, 2)) > 0
    reference = hints.global_[:, -1] > 0
    assert bool((points | reference).all())
    for share, want in (((points & ~reference).float().mean(), 0.55), ((points & reference).float().mean(), 0.15),
                        ((~points & reference).float().mean(), 0.30)):
        assert abs(float(share) - want) < 0.06, (float(share), want)
    assert torch.allclose(hints.global_[reference, :-1].sum(1), torch.tensor(1.0))


def test_the_chroma_term_charges_a_greyer_prediction():
    """chroma_gap is each image's mean |ab| minus its truth's (negative when greyer); --refiner-chroma adds its
    weight x the mean |gap| to the loss, refined or not, and that term trains the refiner."""
    truth = torch.rand(2, 2, 8, 8) * 2 - 1
    assert torch.allclose(chroma_gap(0.5 * truth, truth), -0.5 * truth.norm(dim=1).mean((1, 2)))
    assert torch.allclose(chroma_gap(truth, truth), torch.zeros(2))
    model, _ = refined_small()
    L = torch.rand(2, 1, 64, 64) * 2 - 1
    ab = torch.zeros(2, 2, 64, 64)
    ab[:, 0] = 0.8  # a red far beyond what the random model's blurred distribution decodes to
    for refine in (True, False):
        plain, g = refined_loss(model, L, ab, one_point(2), BINS, 0.38, torch.device("cpu"), refine)
        charged, g2 = refined_loss(model, L, ab, one_point(2), BINS, 0.38, torch.device("cpu"), refine,
                                   chroma_weight=2.0)
        assert torch.allclose(g, g2) and (g < -0.05).all()  # the decoded colour is greyer than this truth
        assert math.isclose(charged.item() - plain.item(), 2.0 * g.abs().mean().item(), rel_tol=1e-4)
        if refine:  # the chroma term alone (the L1 parts of the two losses cancel) reaches the refiner's weights
            model.zero_grad()
            (charged - plain).backward()
            assert model.decoder.refiner.head.weight.grad.abs().sum() > 0


def test_a_short_refiner_run_trains_only_the_refiner(tmp_path):
    """Two steps on the CPU from a small guided model: last.pt holds the refined model, its base weights are the
    source's exactly, its refiner moved, --init-from on it gives back the decoder without the refiner, and it
    cannot join an ensemble."""
    torch.manual_seed(0)
    source = build_model(SMALL, "none")
    prior = torch.full((len(BINS),), 1.0 / len(BINS))
    save_checkpoint(tmp_path / "guided.pt", source, SMALL, extras={"ab_bins": BINS, "ab_prior": prior})
    for part in ("train", "val"):
        (tmp_path / part).mkdir()
        for i in range(3):
            rgb = (np.random.default_rng(i).random((40, 50, 3)) * 255).astype(np.uint8)
            cv2.imwrite(str(tmp_path / part / f"p{i}.png"), rgb)
    paths = Paths(data_dir=tmp_path / "train", val_dir=tmp_path / "val", runs_dir=tmp_path / "runs")
    tcfg = TrainConfig(epochs=1, batch_size=2, max_steps=2, warmup_steps=1, lr=1e-2, refiner_ce=0.02, refiner_chroma=0.5,
                       init_from=str(tmp_path / "guided.pt"))
    assert fit_refiner(paths, tcfg, 4, torch.device("cpu"), "r") == 0
    model, ckpt = load_checkpoint(tmp_path / "runs" / "r" / "last.pt", torch.device("cpu"))
    assert isinstance(model.decoder, RefinedDecoder) and ckpt["model_config"].refiner_width == 4
    assert torch.equal(model.decoder.refiner.bins, BINS)
    theirs = source.decoder.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.decoder.base.state_dict().items())
    assert model.decoder.refiner.head.weight.abs().sum() > 0  # it started at zero
    import json
    record = json.loads((tmp_path / "runs" / "r" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 2 and abs(record["val_chroma_gap"]) <= record["val_chroma_gap_abs"]
    assert record["val_score"] == pytest.approx(record["val_loss"] + 0.5 * record["val_chroma_gap_abs"], abs=1e-3)
    # the weight reaches the loss: the same run without the chroma term ends with other refiner weights
    assert fit_refiner(paths, dataclasses.replace(tcfg, refiner_chroma=0.0), 4, torch.device("cpu"), "r0") == 0
    other, _ = load_checkpoint(tmp_path / "runs" / "r0" / "last.pt", torch.device("cpu"))
    assert not torch.equal(other.decoder.refiner.head.weight, model.decoder.refiner.head.weight)
    plain, info, _ = load_generator(tmp_path / "runs" / "r" / "last.pt", torch.device("cpu"))
    assert not isinstance(plain.decoder, RefinedDecoder) and info["model_config"].refiner_width == 0
    from Export import assemble
    with pytest.raises(ValueError, match="hint refiner cannot join an ensemble"):
        assemble([tmp_path / "guided.pt", tmp_path / "runs" / "r" / "last.pt"])


@pytest.fixture(scope="module")
def release():
    return shipped_torch("refiner_width")


@torch.no_grad()
def test_the_shipped_refiner_beats_its_decoder_alone(release):
    """Simulated points (three draws) on the eight real test photos: the shipped model's colours are closer to the
    photos' with its refiner than with its decoder alone (mean squared ab error at least 5 % lower; it is 5-13 %
    lower per draw). Zeroing the refiner's shift, or feeding it no points, fails this."""
    from conftest import COLOUR_SAMPLES
    model, cfg, bins = release
    L, ab = (torch.cat(t) for t in zip(*[photo_lab(name, cfg.image_size) for name in COLOUR_SAMPLES]))
    alone = ColorizationModel(model.encoder, model.decoder.base)
    errors = {model: 0.0, alone: 0.0}
    for seed in range(3):
        local = point_maps(ab, torch.Generator().manual_seed(seed), torch.ones(len(L), dtype=torch.bool))
        hints = Hints(local, torch.zeros(len(L), len(bins) + 1))
        for m in errors:
            pred = decode_prediction(m(L, hints), cfg, bins, size=ab.shape[-2:])
            errors[m] += float(((pred - ab) ** 2).mean())
    assert errors[model] < 0.95 * errors[alone], (errors[model], errors[alone])

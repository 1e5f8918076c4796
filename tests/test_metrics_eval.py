"""Metrics against hand-computed values, the quantisation helpers, and the evaluate mode."""
import json
import math

import numpy as np
import pytest
import torch

import Engine
import Quantization
from Metrics import colorfulness, delta_cf, psnr, ssim, summarise


def test_psnr_hand_computed():
    truth = np.zeros((2, 2, 3), np.uint8)
    pred = np.full((2, 2, 3), 5, np.uint8)  # MSE = 25
    assert psnr(pred, truth) == pytest.approx(10 * math.log10(255 ** 2 / 25))  # 34.1514 dB
    assert psnr(truth, truth) == math.inf
    with pytest.raises(ValueError):
        psnr(pred, np.zeros((3, 2, 3), np.uint8))


def test_ssim_hand_computed_for_flat_images():
    a, b = np.full((8, 8, 3), 100, np.uint8), np.full((8, 8, 3), 110, np.uint8)
    c1 = (0.01 * 255) ** 2  # no variance, so SSIM reduces to its luminance term
    assert ssim(a, b) == pytest.approx((2 * 100 * 110 + c1) / (100 ** 2 + 110 ** 2 + c1), abs=1e-6)
    assert ssim(a, a) == pytest.approx(1.0)


def test_colorfulness_hand_computed():
    img = np.array([[[255, 0, 0], [0, 0, 255]]], np.uint8)
    # rg = |R-G| = (255, 0): mean 127.5, std 127.5; yb = |(R+G)/2 - B| = (127.5, 255): mean 191.25, std 63.75
    expected = math.hypot(127.5, 63.75) + 0.3 * math.hypot(127.5, 191.25)  # 211.505
    assert colorfulness(img) == pytest.approx(expected)
    assert colorfulness(np.full((4, 4, 3), 77, np.uint8)) == 0.0
    assert delta_cf([10, 20], [30, 40]) == 20


def test_summarise_groups_by_method():
    rows = [{"method": "m", "psnr": 20, "ssim": 0.9, "cf": 10, "cf_truth": 30},
            {"method": "m", "psnr": 22, "ssim": 0.8, "cf": 20, "cf_truth": 30},
            {"method": "grey", "psnr": 19, "ssim": 0.9, "cf": 0, "cf_truth": 30}]
    table = {r["method"]: r for r in summarise(rows)}
    assert table["m"]["psnr"] == 21 and table["m"]["delta_cf"] == 15 and table["grey"]["images"] == 1


def test_bins_soft_encoding_and_annealed_mean():
    bins = Quantization.ab_bins(10)
    assert 200 < len(bins) < 330 and (bins.abs() <= 110).all()
    assert (bins == 0).all(dim=1).any()  # grey is a class
    ab = torch.tensor([[0.0, 0.0], [0.3, -0.4]]).T.reshape(1, 2, 1, 2)
    idx, w = Quantization.soft_encode(ab, bins)
    assert torch.allclose(w.sum(1), torch.ones(1, 1, 2))
    assert torch.equal(bins[idx[0, 0, 0, 0]], torch.tensor([0.0, 0.0]))  # nearest bin first
    logits = torch.full((1, len(bins), 1, 1), -10.0)
    target = int(idx[0, 0, 0, 1])
    logits[0, target] = 10.0
    decoded = Quantization.annealed_mean(logits, bins, 0.38)
    assert torch.allclose(decoded[0, :, 0, 0] * 110, bins[target], atol=1e-3)
    prior = Quantization.bin_prior([ab], bins)
    assert prior.sum() == pytest.approx(1.0)
    w = Quantization.class_weights(prior)
    assert float((prior * w).sum()) == pytest.approx(1.0) and w.max() > w.min()


def test_evaluate_mode_prints_table_and_writes_reports(photo_dir, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = Engine.main(["--mode", "evaluate", "--input", str(photo_dir), "--checkpoint", str(tiny_checkpoint),
                      "--output", str(out), "--device", "cpu"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| grey |" in text and "| tiny.pt |" in text
    summary = {r["method"]: r for r in json.loads((out / "metrics.json").read_text())["summary"]}
    assert summary["grey"]["cf"] < 1.0 and summary["grey"]["images"] == 8
    assert summary["grey"]["cf_truth"] > 10  # real colour photos
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + 2 * 8
    assert (out / "grid.png").is_file()

"""Encoder/decoder shapes, the frozen encoder, and learning on a real batch."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY
from Training import make_loss_fn
from EncoderLayers import BackboneUnavailableError, FrozenVGG16Encoder, load_vgg16_features
from ModelIO import build_model
from LoadData import ColorizationDataset, collate_skip, find_images
from References import TrainConfig


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(TINY, "none")


@pytest.mark.parametrize("hw", [(64, 64), (65, 97), (33, 50), (128, 48)])
def test_output_shape_matches_input_including_odd_sizes(model, hw):
    L = torch.rand(2, 1, *hw) * 2 - 1
    ab = model.eval()(L)
    assert ab.shape == (2, 2, *hw)
    assert ab.abs().max() <= 1.0


def test_classification_head_outputs_bin_logits():
    cfg = dataclasses.replace(TINY, loss="classification")
    m = build_model(cfg, "none", n_bins=261).eval()
    out = m(torch.zeros(1, 1, 64, 80))
    assert out.shape == (1, 261, 32, 40)  # at the relu2_2 scale (stride 2)


def test_encoder_taps_shapes(model):
    taps = model.encoder(torch.zeros(1, 1, 64, 64))
    assert [t.shape[1:] for t in taps] == [(128, 32, 32), (256, 16, 16), (512, 8, 8), (512, 4, 4)]


def test_encoder_is_frozen_and_stays_in_eval(model):
    model.train()
    assert model.decoder.training
    assert not model.encoder.training
    assert not any(m.training for m in model.encoder.modules())
    assert not any(p.requires_grad for p in model.encoder.parameters())


def test_no_gradient_reaches_encoder_and_weights_unchanged(photo_dir):
    torch.manual_seed(0)
    m = build_model(TINY, "none").train()
    before = {k: v.clone() for k, v in m.encoder.state_dict().items()}
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)  # deliberately given every parameter
    batch = collate_skip([ColorizationDataset(find_images(photo_dir), 64, train=False)[i] for i in range(4)])
    for _ in range(2):
        loss = F.l1_loss(m(batch["L"]), batch["ab"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is None for p in m.encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.decoder.parameters())
    after = m.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("loss", ["huber", "classification"])
def test_loss_falls_when_overfitting_one_real_batch(photo_dir, loss):
    import Quantization
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, loss=loss)
    ds = ColorizationDataset(find_images(photo_dir), 64, train=False)
    batch = collate_skip([ds[i] for i in range(8)])
    bins = weights = None
    if loss == "classification":
        bins = Quantization.ab_bins(cfg.ab_grid)
        weights = Quantization.class_weights(Quantization.bin_prior([batch["ab"]], bins))
    m = build_model(cfg, "none", None if bins is None else len(bins)).train()
    loss_fn = make_loss_fn(cfg, TrainConfig(), bins, weights)
    opt = torch.optim.AdamW(m.decoder.parameters(), lr=3e-3)
    feats = m.encoder(batch["L"])  # frozen, so its taps can be computed once: keeps the test fast
    assert torch.allclose(m.decoder(feats, batch["L"]), m(batch["L"]))
    losses = []
    for _ in range(40):
        value = loss_fn(m.decoder(feats, batch["L"]), batch["ab"])
        opt.zero_grad()
        value.backward()
        opt.step()
        losses.append(value.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_backbone_file_errors_are_clear(tmp_path):
    with pytest.raises(BackboneUnavailableError, match="--backbone-weights"):
        load_vgg16_features(tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneUnavailableError, match="junk.pth"):
        load_vgg16_features(junk)
    torch.save({"0.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(BackboneUnavailableError, match="not a VGG16 state dict"):
        load_vgg16_features(tmp_path / "wrong.pth")


def test_full_vgg16_state_dict_is_accepted(tmp_path):
    torch.manual_seed(1)
    features = load_vgg16_features("none")
    # the full vgg16() layout: "features.N.*" plus a classifier we must ignore
    full = {f"features.{k}": v for k, v in features.state_dict().items()}
    full["classifier.0.weight"] = torch.zeros(4, 4)
    torch.save(full, tmp_path / "full.pth")
    feats = load_vgg16_features(tmp_path / "full.pth")
    assert torch.equal(feats[28].weight, features[28].weight)


def test_unknown_tap_is_rejected():
    with pytest.raises(ValueError, match="relu9_9"):
        FrozenVGG16Encoder(load_vgg16_features("none"), ("relu9_9",))


def test_torchvision_path_without_cache_or_network_says_how_to_fix(monkeypatch, tmp_path):
    # Point torch's cache at an empty folder and make any download fail like an offline machine.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import torch.hub

    def offline(*a, **k):
        raise OSError("network is unreachable")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(BackboneUnavailableError, match="--backbone-weights PATH"):
        load_vgg16_features(None)

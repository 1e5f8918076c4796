"""Release files that cannot break silently: the .pt export's checks, ONNX parity, and the shipped file itself."""

import numpy as np
import pytest
import torch

import Engine
from conftest import ROOT, SHARED_CORPUS, TINY, needs_shared_corpus
from Export import ExportError, ab_difference, export_onnx, export_release
from Inference import Colorizer
from ImageIO import find_images, load_image
from ModelIO import build_model, load_checkpoint, nonfinite_tensors, save_checkpoint
from test_docs import model_table

CPU = torch.device("cpu")
SHIPPED = ROOT / "weights" / "colorizer.pt"


def trained_like(tmp_path, scale_var=1.0):
    """A tiny checkpoint whose BatchNorm statistics look like the VGG taps' (variances far above float16's range)."""
    torch.manual_seed(0)
    model = build_model(TINY, "none")
    for name, m in model.decoder.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d) and name.endswith("norm"):
            m.running_var.fill_(1.6e6 * scale_var)
            m.running_mean.fill_(500.0)
    path = tmp_path / "source.pt"
    save_checkpoint(path, model, TINY, epoch=3, best_metric=0.5)
    return path


def test_release_keeps_batchnorm_in_float32_and_matches_its_source(tmp_path):
    src = trained_like(tmp_path)
    report = export_release(src, tmp_path / "release.pt")
    raw = torch.load(tmp_path / "release.pt", weights_only=True)
    assert not nonfinite_tensors(raw)
    assert raw["decoder"]["adapters.0.norm.running_var"].dtype == torch.float32
    assert raw["decoder"]["ups.0.refine.0.weight"].dtype == torch.float16  # the bulk is halved
    assert report["max"] < 2.0 and raw["optimizer"] is None


def test_release_refuses_non_finite_tensors_and_drifting_outputs(tmp_path, monkeypatch):
    src = trained_like(tmp_path)
    ckpt = torch.load(src, weights_only=True)
    ckpt["decoder"]["head.weight"][0, 0, 0, 0] = float("inf")
    torch.save(ckpt, tmp_path / "inf.pt")
    with pytest.raises(ValueError, match="NaN or inf"):
        export_release(tmp_path / "inf.pt", tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()
    # the old policy (everything float16) overflows the variances: the export must refuse it
    import ModelIO
    monkeypatch.setattr(ModelIO, "release_state_dict",
                        lambda m: {k: v.half() if v.is_floating_point() else v for k, v in m.state_dict().items()})
    with pytest.raises(ExportError):
        export_release(src, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists() and not list(tmp_path.glob(".out.pt*"))


def test_onnx_export_matches_torch_on_the_examples(tmp_path, tiny_checkpoint, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "tiny.onnx"
    assert Engine.main(["--mode", "export", "--checkpoint", str(tiny_checkpoint), "--output", str(out)]) == 0
    images = [load_image(f) for f in find_images(ROOT / "examples")]
    torch_ab = Colorizer.from_checkpoint(tiny_checkpoint, CPU).ab_for(images)
    onnx = Colorizer.from_checkpoint(out, CPU)
    onnx_ab = onnx.ab_for(images)
    assert np.abs(onnx_ab - torch_ab).mean() * 110 < 1.0  # Lab units
    assert onnx.colorize(images[:1])[0].shape == images[0].shape[:2] + (3,)


def test_shipped_model_is_intact():
    raw = torch.load(SHIPPED, weights_only=True)
    assert not nonfinite_tensors({"encoder": raw["encoder"], "decoder": raw["decoder"]})
    assert SHIPPED.stat().st_size <= 40 * 2 ** 20
    model, _ = load_checkpoint(SHIPPED, CPU)
    with torch.no_grad():
        assert torch.isfinite(model(torch.zeros(1, 1, 64, 64))).all()


def check_table_rows(tmp_path, folders: dict[str, "Path"]) -> None:
    """The README's model-table rows for ``folders`` (name -> the photos) are what --mode evaluate gives today
    for the file the table names."""
    import json
    rows = {k: v for k, v in model_table(ROOT / "README.md").items() if k[1] in folders}
    (name,) = {method for method, _ in rows if method != "grey"}
    assert {folder for _, folder in rows} == set(folders) and len(rows) == 2 * len(folders), rows
    assert Engine.main(["--mode", "evaluate", *map(str, folders.values()), "--checkpoint", str(ROOT / "weights" / name),
                        "--output", str(tmp_path / "eval"), "--no-fd"]) == 0
    for (method, folder), (images, (psnr, ssim, cf, cf_truth, dcf)) in rows.items():
        out = tmp_path / "eval" / (folder if len(folders) > 1 else "")
        summary = json.loads((out / "metrics.json").read_text())["summary"]
        got = {r["method"]: r for r in summary}[method]
        assert got["images"] == images, (method, folder)
        # to the table's last digit (one unit of slack for rounding on another machine's arithmetic)
        assert abs(got["psnr"] - psnr) <= 0.011 and abs(got["ssim"] - ssim) <= 0.00011, (method, folder, got)
        assert abs(got["cf"] - cf) <= 0.011 and abs(got["delta_cf"] - dcf) <= 0.011, (method, folder, got)
        assert abs(got["cf_truth"] - cf_truth) <= 0.011, (method, folder, got)


def test_readme_table_rows_of_the_bundled_samples(tmp_path):
    """Runs everywhere (CI included): scikit-image's sample photos, written here, are the table's small fixture."""
    from PIL import Image
    from conftest import COLOUR_SAMPLES, real_photo
    folder = tmp_path / "skimage_samples"
    folder.mkdir()
    for name in COLOUR_SAMPLES:
        Image.fromarray(real_photo(name, 512)).save(folder / f"{name}.png")
    check_table_rows(tmp_path, {"skimage_samples": folder})


@needs_shared_corpus
def test_shipped_model_reproduces_the_readme_table(tmp_path):
    """Every validation row of the README's model table is what --mode evaluate gives today for the file it names."""
    check_table_rows(tmp_path, {f: SHARED_CORPUS / f for f in ("val", "val_scenes")})


def classifier_runs(tmp_path, n=2):
    """``n`` tiny classification checkpoints on one encoder, each decoder with its own random weights."""
    import dataclasses

    import Quantization
    cfg = dataclasses.replace(TINY, loss="classification")
    bins = Quantization.ab_bins(cfg.ab_grid)
    torch.manual_seed(0)
    encoder = build_model(cfg, "none").encoder
    paths = []
    for i in range(n):
        torch.manual_seed(10 + i)
        model = build_model(cfg, "none")
        model.encoder.load_state_dict(encoder.state_dict())
        with torch.no_grad():  # peaked, distinct distributions (a random head is nearly uniform)
            model.decoder.head.weight.mul_(40)
        paths.append(tmp_path / f"run{i}.pt")
        save_checkpoint(paths[-1], model, cfg, epoch=i, best_metric=1.0,
                        extras={"ab_bins": bins, "ab_prior": torch.full((len(bins),), 1 / len(bins))})
    return paths


def test_ensemble_release_is_the_product_of_its_members(tmp_path):
    import Quantization
    runs = classifier_runs(tmp_path)
    out = tmp_path / "ens.pt"
    assert Engine.main(["--mode", "export", "--ensemble", *map(str, runs), "--output", str(out),
                        "--temperature", "0.2"]) == 0
    L = torch.rand(3, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        logps = [torch.log_softmax(load_checkpoint(r, CPU)[0](L), 1) for r in runs]
        released, ckpt = load_checkpoint(out, CPU)
        got = released(L)
    cfg = ckpt["model_config"]
    assert cfg.members == 2 and cfg.temperature == 0.2 and ckpt["optimizer"] is None
    assert [m["source"] for m in ckpt["config"]["ensemble_of"]] == ["run0.pt", "run1.pt"]
    bins = ckpt["extras"]["ab_bins"]
    # float16 weights in the release: compare decoded colour, in Lab units
    want = Quantization.annealed_mean((logps[0] + logps[1]) / 2, bins, 0.2)
    assert (Quantization.annealed_mean(got, bins, 0.2) - want).abs().max() * 110 < 0.5
    # and it is neither member alone nor their arithmetic mixture
    mixture = torch.log((logps[0].exp() + logps[1].exp()) / 2)
    for other in (logps[0], logps[1], mixture):
        assert (Quantization.annealed_mean(other, bins, 0.2) - want).abs().max() * 110 > 1.0
    colorizer = Colorizer.from_checkpoint(out, CPU)
    assert colorizer.cfg.temperature == 0.2
    assert colorizer.colorize([np.zeros((40, 50), np.uint8)])[0].shape == (40, 50, 3)


def test_ensemble_refuses_members_that_do_not_share_the_encoder_or_shape(tmp_path, capsys):
    runs = classifier_runs(tmp_path, 3)
    ckpt = torch.load(runs[1], weights_only=True)
    first = next(k for k, v in ckpt["encoder"].items() if v.is_floating_point())
    ckpt["encoder"][first] = ckpt["encoder"][first] + 0.01
    torch.save(ckpt, runs[1])
    with pytest.raises(ValueError, match="run1.pt: .*encoder weights differ"):
        export_release([runs[0], runs[1]], tmp_path / "out.pt")
    ckpt = torch.load(runs[2], weights_only=True)
    ckpt["model_config"]["image_size"] = 96
    torch.save(ckpt, runs[2])
    assert Engine.main(["--mode", "export", "--ensemble", str(runs[0]), str(runs[2]),
                        "--output", str(tmp_path / "out.pt")]) == 1
    err = capsys.readouterr().err
    assert "run2.pt: cannot join" in err and "image_size" in err
    assert not (tmp_path / "out.pt").exists()


def test_ensemble_exports_to_onnx_with_its_temperature(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    runs = classifier_runs(tmp_path)
    release, graph = tmp_path / "ens.pt", tmp_path / "ens.onnx"
    export_release(runs, release, temperature=0.2)
    report = export_onnx(release, graph)
    assert report["max"] < 0.5
    images = [load_image(f) for f in find_images(ROOT / "examples")[:2]]
    torch_ab = Colorizer.from_checkpoint(release, CPU).ab_for(images)
    onnx = Colorizer.from_checkpoint(graph, CPU)
    assert onnx.cfg.temperature == 0.2
    assert ab_difference(onnx.ab_for(images), torch_ab)["max"] < 0.5


def test_training_refuses_to_resume_an_ensemble_release(tmp_path, photo_dir, capsys):
    runs = classifier_runs(tmp_path)
    ens = tmp_path / "ens.pt"
    export_release(runs, ens, temperature=0.2)
    args = ["--mode", "training", "--data-dir", str(photo_dir), "--backbone-weights", "none", "--batch-size", "2",
            "--workers", "0", "--runs-dir", str(tmp_path / "runs"), "--device", "cpu", "--epochs", "1",
            "--resume", str(ens)]
    assert Engine.main(args) == 1
    assert "ens.pt: an ensemble of 2 decoders assembled for release cannot be trained on" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.pt"))

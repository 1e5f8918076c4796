"""Release files that cannot break silently: the .pt export's checks, ONNX parity, and the shipped file itself."""

import json

import numpy as np
import pytest
import torch

import Engine
from conftest import ROOT, SHARED_CORPUS, TINY, load_script, needs_shared_corpus
import Export
from Export import ONNX_TOLERANCE, ExportError, ab_difference, export_onnx, export_release
from Inference import Colorizer
from ImageIO import find_images, load_image
from ModelIO import build_model, load_checkpoint, nonfinite_tensors, save_checkpoint
from test_docs import model_table

CPU = torch.device("cpu")
SHIPPED = ROOT / "weights" / "colorizer.pt"
SHIPPED_ONNX = ROOT / "weights" / "colorizer.onnx"


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


def test_release_refuses_finite_weights_whose_outputs_drift(tmp_path, monkeypatch):
    """The drift check itself (issue 23): finite weights, so only the comparison can refuse them."""
    src = trained_like(tmp_path)
    import ModelIO
    real = ModelIO.release_state_dict
    scaled = lambda m, f: {k: v * f if k == "head.weight" else v for k, v in real(m).items()}  # noqa: E731
    monkeypatch.setattr(ModelIO, "release_state_dict", lambda m: scaled(m, 1.001))  # float16-sized change: passes
    assert export_release(src, tmp_path / "ok.pt")["max"] < 2.0
    monkeypatch.setattr(ModelIO, "release_state_dict", lambda m: scaled(m, 3.0))
    with pytest.raises(ExportError, match="out.pt: decoded ab differs from the source checkpoint"):
        export_release(src, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists() and not list(tmp_path.glob(".out.pt*"))


def perturbed_sessions(monkeypatch, offset: float) -> None:
    """Make every ONNX Runtime session return its "ab" plus ``offset`` (network units; x110 for Lab)."""
    import onnxruntime as ort

    class Perturbed(ort.InferenceSession):
        def run(self, names, feeds, *args, **kwargs):
            return [out + np.float32(offset) for out in super().run(names, feeds, *args, **kwargs)]
    monkeypatch.setattr(ort, "InferenceSession", Perturbed)


def test_onnx_export_refuses_a_graph_whose_outputs_drift(tmp_path, tiny_checkpoint, monkeypatch):
    """The ONNX drift check (issue 23): ONNX Runtime's answer is compared with torch's and a mismatch refused."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    perturbed_sessions(monkeypatch, 0.02)  # 2.2 Lab units everywhere: refused, nothing left behind
    with pytest.raises(ExportError, match="out.onnx: decoded ab differs from the source checkpoint"):
        export_onnx(tiny_checkpoint, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists() and not list(tmp_path.glob(".out.onnx*"))


def test_onnx_export_refuses_non_finite_initializers(tmp_path, tiny_checkpoint, monkeypatch):
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    real = Export.store_float16

    def store_then_break(proto):
        counts = real(proto)
        t = next(t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
        a = onnx.numpy_helper.to_array(t).copy()
        a.flat[0] = np.inf
        t.CopyFrom(onnx.numpy_helper.from_array(a, t.name))
        return counts
    monkeypatch.setattr(Export, "store_float16", store_then_break)
    with pytest.raises(ExportError, match=r"out.onnx: 1 initializer\(s\) would not be finite"):
        export_onnx(tiny_checkpoint, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists() and not list(tmp_path.glob(".out.onnx*"))


def onnx_initializers(path) -> dict:
    """name -> numpy array of every initializer of an ONNX file."""
    import onnx
    return {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def test_onnx_float16_storage_changes_no_value(tmp_path):
    """float16 initializers only where float16 holds the value exactly: same outputs, about half the file."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    release = tmp_path / "release.pt"
    export_release(trained_like(tmp_path), release)  # conv weights float16, BatchNorm float32 (variances > 65504)
    r16 = export_onnx(release, tmp_path / "w16.onnx")
    script = load_script("export_model")
    assert script.main([str(release), str(tmp_path / "w32.onnx"), "--onnx-weights", "float32"]) == 0
    r32 = {"bytes": (tmp_path / "w32.onnx").stat().st_size}
    w16, w32 = onnx_initializers(tmp_path / "w16.onnx"), onnx_initializers(tmp_path / "w32.onnx")
    halved = [k for k in w32 if k + ".float16" in w16]
    assert r16["float16"] == len(halved) > 0 and r16["bytes"] < 0.6 * r32["bytes"]
    for k in halved:
        stored = w16[k + ".float16"]
        assert stored.dtype == np.float16 and np.array_equal(stored.astype(np.float32), w32[k])
    assert "adapters.0.norm.running_var" in " ".join(k for k in w16 if w16[k].dtype == np.float32)
    assert all(np.isfinite(a).all() for a in w16.values() if a.dtype.kind == "f")
    L = np.random.default_rng(0).uniform(-1, 1, (3, 1, 64, 64)).astype(np.float32)
    import onnxruntime as ort
    outs = [ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]).run(["ab"], {"L": L})[0]
            for f in ("w16.onnx", "w32.onnx")]
    assert np.abs(outs[0] - outs[1]).max() * 110 < 1e-3
    with pytest.raises(ValueError, match="weights='int4'"):
        export_onnx(release, tmp_path / "x.onnx", weights="int4")


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
    assert SHIPPED.stat().st_size <= 45 * 2 ** 20  # two decoders, their hint layers and the refiner, in float16
    model, _ = load_checkpoint(SHIPPED, CPU)
    with torch.no_grad():
        assert torch.isfinite(model(torch.zeros(1, 1, 64, 64))).all()


def test_shipped_onnx_is_intact_and_matches_the_shipped_pt():
    """weights/colorizer.onnx: finite, its metadata, and ONNX Runtime's CPU output (ab and entropy) equal to torch's on
    the .pt, with no hints and with points and a global hint on every input."""
    ort = pytest.importorskip("onnxruntime")
    from References import VERSION
    assert SHIPPED_ONNX.stat().st_size <= 45 * 2 ** 20
    import onnx
    nodes = onnx.load(str(SHIPPED_ONNX), load_external_data=False).graph.node
    assert not any(n.metadata_props or n.doc_string for n in nodes)  # no exporter stack traces (machine paths)
    assert b'.py", line ' not in SHIPPED_ONNX.read_bytes()  # nor in subgraphs (an If's branches), on any machine
    inits = onnx_initializers(SHIPPED_ONNX)
    assert all(np.isfinite(a).all() for a in inits.values() if a.dtype.kind == "f")
    session = ort.InferenceSession(str(SHIPPED_ONNX), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    model, ckpt = load_checkpoint(SHIPPED, CPU)
    cfg = ckpt["model_config"]
    keys = ("image_size", "loss", "temperature", "members", "guided", "weights", "version")
    assert tuple(meta[k] for k in keys) == (str(cfg.image_size), cfg.loss, str(cfg.temperature), str(cfg.members),
                                            str(int(cfg.guided)), "float16", VERSION)
    bins = ckpt["extras"]["ab_bins"]
    assert np.allclose(np.array(json.loads(meta["ab_bins"])), bins.numpy(), atol=1e-3)
    inputs = Export.graph_inputs(cfg, Export.reference_batch(cfg.image_size), len(bins))
    with torch.no_grad():
        want_ab, want_entropy, want_probs = Export.ColorizerGraph(model, cfg, bins, entropy=True)(*inputs)
    got_ab, got_entropy, got_probs = session.run(["ab", "entropy", "probs"],
                                                 {n: x.numpy() for n, x in zip(Export.GRAPH_INPUTS, inputs)})
    assert float((torch.from_numpy(got_probs) - want_probs).abs().max()) <= Export.ENTROPY_TOLERANCE
    diff = ab_difference(torch.from_numpy(got_ab), want_ab)
    assert diff["max"] <= ONNX_TOLERANCE["max"] and diff["mean"] <= ONNX_TOLERANCE["mean"]
    assert float((torch.from_numpy(got_entropy) - want_entropy).abs().max()) <= Export.ENTROPY_TOLERANCE


def check_table_rows(tmp_path, folders: dict) -> None:
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

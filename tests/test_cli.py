"""The command line end to end: Engine.main trains, resumes, and colourises from its own checkpoint."""
import json

import pytest
import torch
from PIL import Image

import Engine
import Training
from conftest import ROOT, SHARED_CORPUS, SHARED_WEIGHTS, needs_shared_weights


def train_args(photo_dir, runs, *extra):
    return ["--mode", "training", "--data-dir", str(photo_dir), "--backbone-weights", "none",
            "--image-size", "32", "--batch-size", "4", "--workers", "0", "--samples", "2",
            "--runs-dir", str(runs), "--run-name", "t", "--device", "cpu", *extra]


def test_train_resume_then_infer_from_own_checkpoint(photo_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert Engine.main(train_args(photo_dir, runs, "--epochs", "1")) == 0
    run = runs / "t"
    for name in ("last.pt", "best.pt", "metrics.jsonl", "loss.png", "samples/epoch_000.png"):
        assert (run / name).is_file(), name
    # the same run name again, without --resume, is refused rather than overwriting the run
    assert Engine.main(train_args(photo_dir, runs, "--epochs", "1")) == 1
    assert "--resume" in capsys.readouterr().err
    # resume continues where it stopped, with the optimizer state, and appends to the log
    assert Engine.main(train_args(photo_dir, runs, "--epochs", "2", "--resume", str(run))) == 0
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1]
    assert all(r["images"] > 0 and r["skipped"] == 0 for r in log)
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1

    out = tmp_path / "out"
    rc = Engine.main(["--mode", "inference", "--input", str(ROOT / "examples"), "--output", str(out),
                      "--checkpoint", str(run / "best.pt"), "--device", "cpu"])
    assert rc == 0
    for f in (ROOT / "examples").glob("*.png"):
        assert Image.open(out / f.name).size == Image.open(f).size
    assert "wrote 6 image(s)" in capsys.readouterr().out


def test_inference_exit_codes_and_messages(tmp_path, tiny_checkpoint, photo_dir, capsys):
    missing = tmp_path / "missing"
    assert Engine.main(["--input", str(missing), "--checkpoint", str(tiny_checkpoint)]) == 1
    assert "missing" in capsys.readouterr().err
    assert Engine.main(["--input", str(photo_dir), "--checkpoint", str(tmp_path / "none.pt")]) == 1
    assert "none.pt" in capsys.readouterr().err
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "good.png").write_bytes(next(photo_dir.glob("*.png")).read_bytes())
    (inp / "bad.png").write_text("not a png")
    rc = Engine.main(["--input", str(inp), "--output", str(tmp_path / "o"), "--checkpoint", str(tiny_checkpoint)])
    assert rc == 1  # a failed file makes the run fail, but the good one is still written
    assert (tmp_path / "o" / "good.png").is_file()
    assert "bad.png" in capsys.readouterr().err


def test_refiner_loss_weights_reach_the_config_and_bad_ones_are_refused(capsys):
    """--refiner-chroma and --refiner-ce go into TrainConfig; a negative or NaN weight, or a weight without
    --refiner, is one clear line (exit 2) before anything loads."""
    from CommandLine import configs_from_args

    parser = Engine.build_parser("training")
    args = parser.parse_args(["--mode", "training", "--refiner", "48", "--refiner-chroma", "0.3",
                              "--refiner-ce", "0.02"])
    tcfg = configs_from_args(args)[2]
    assert (tcfg.refiner_chroma, tcfg.refiner_ce) == (0.3, 0.02)
    for extra, said in ((["--refiner", "48", "--refiner-chroma", "-1"], "at least 0"),
                        (["--refiner", "48", "--refiner-chroma", "nan"], "at least 0"),
                        (["--refiner", "48", "--refiner-ce", "nan"], "at least 0"),
                        (["--refiner-chroma", "0.3"], "--refiner WIDTH")):
        assert Engine.main(["--mode", "training", *extra]) == 2, extra
        assert said in capsys.readouterr().err


def test_session_mb_reaches_the_server_and_bad_values_are_refused(capsys, monkeypatch):
    """--session-mb bounds the page's sessions (WebApp.serve gets it); 0, NaN and inf are one line (exit 2), before
    the port is checked or the model loads."""
    import WebApp

    got = {}
    monkeypatch.setattr(WebApp, "serve", lambda colorizer, *a, **k: got.update(k))
    monkeypatch.setattr(WebApp, "check_port", lambda host, port: None)
    assert Engine.main(["--mode", "serve", "--session-mb", "64", "--device", "cpu"]) == 0
    assert got["session_mb"] == 64
    for value in ("0", "nan", "inf", "-5"):
        assert Engine.main(["--mode", "serve", "--session-mb", value]) == 2, value
        assert "--session-mb must be a positive number of MiB" in capsys.readouterr().err


def mode_help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        Engine.main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_help_documents_every_flag_under_its_mode(capsys):
    """--help lists the photo and film options in at most 60 lines; each mode's --help its own; every option
    of the parser is listed by some mode's help."""
    short = mode_help(capsys)
    assert len(short.splitlines()) <= 60
    for flag in ("--output", "--format", "--skip-existing", "--workers", "--temporal-smoothing", "--checkpoint"):
        assert flag in short
    assert "--epochs" not in short and "--gan" not in short and "--port" not in short
    texts = {m: mode_help(capsys, "--mode", m) for m in ("training", "evaluate", "serve", "export")}
    assert "--epochs" in texts["training"] and "--lambda-gp" in texts["training"] and "--port" not in texts["training"]
    assert "--fid-weights" in texts["evaluate"] and "--port" in texts["serve"] and "--ensemble" in texts["export"]
    assert "default: 128" in texts["training"] and "default: auto" in short
    every = "\n".join([short, *texts.values()])
    for action in Engine.build_parser()._actions:
        for flag in action.option_strings:
            assert flag in every, flag


def test_nan_loss_stops_training(photo_dir):
    from ModelIO import build_model
    from LoadData import ColorizationDataset, find_images, make_loader
    from conftest import TINY
    model = build_model(TINY, "none")
    loader = make_loader(ColorizationDataset(find_images(photo_dir), 32, True), 4, True, 0)
    opt = torch.optim.AdamW(model.decoder.parameters())
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    with pytest.raises(FloatingPointError, match="nan"):
        Training.train_one_epoch(model, model.decoder, loader, opt, scaler, lambda p, t: p.sum() * float("nan"),
                                 torch.device("cpu"), 0, 1.0)


def test_missing_backbone_is_a_clear_error(photo_dir, tmp_path, capsys):
    args = train_args(photo_dir, tmp_path, "--epochs", "1")
    args[args.index("--backbone-weights") + 1] = str(tmp_path / "vgg.pth")
    assert Engine.main(args) == 1
    assert "--backbone-weights" in capsys.readouterr().err


@needs_shared_weights
def test_shared_backbone_file_loads_with_expected_taps():
    from EncoderLayers import FrozenVGG16Encoder, load_vgg16_features
    enc = FrozenVGG16Encoder(load_vgg16_features(SHARED_WEIGHTS),
                             ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"))
    from LoadData import find_images, load_rgb, normalize_lab, resize_to_square, rgb_to_lab, to_tensor
    photo = find_images(SHARED_CORPUS / "val")[0] if SHARED_CORPUS.is_dir() else None
    rgb = resize_to_square(to_tensor(load_rgb(photo)), 96) if photo else torch.rand(3, 96, 96)
    L, _ = normalize_lab(rgb_to_lab(rgb))
    taps = enc(L[None])
    assert [tuple(t.shape[1:]) for t in taps] == [(64, 96, 96), (128, 48, 48), (256, 24, 24), (512, 12, 12), (512, 6, 6)]
    assert max(float(t.max()) for t in taps) > 100  # the Caffe-scale activations docs/training.md warns about

"""The command line end to end: Engine.main trains, resumes, and colourises from its own checkpoint."""
import json
import re

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


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        Engine.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--mode", "--device", "--input", "--output", "--checkpoint", "--backbone-weights",
                 "--resume", "--epochs", "--loss", "--image-size", "--data-dir", "--val-dir", "--gan", "--lambda-adv",
                 "--init-from", "--init-member", "--decoder", "--n-critic", "--lambda-gp", "--fid-weights"):
        assert flag in text
    assert "default: 128" in text and "default: auto" in text


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
    assert max(float(t.max()) for t in taps) > 100  # the Caffe-scale activations its README warns about


def test_readme_names_only_files_that_exist():
    """Every picture, script and benchmark the README points to ships; no unfilled ALL-CAPS placeholder."""
    import re
    text = (ROOT / "README.md").read_text()
    named = set(re.findall(r"\]\(((?:docs|examples|weights|notebooks|web)/[^)#\s]+)\)", text))
    named |= set(re.findall(r"`((?:scripts|benchmarks|tests|notebooks)/[\w./-]+\.(?:py|ipynb))", text))
    assert len(named) >= 5, named
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"README names files that do not exist: {missing}"
    prose = re.sub(r"```.*?```|`[^`]*`", "", text, flags=re.S)  # names in code (LOCAL_RANK) are real
    placeholders = re.findall(r"\b[A-Z]{2,}(?:_[A-Z0-9]+)+\b", prose)
    assert not placeholders, f"README has unfilled placeholders: {placeholders}"


def listed_modules(text: str) -> set[str]:
    """pyproject.toml's [tool.setuptools] py-modules, read without a TOML parser (Python 3.10 has no tomllib)."""
    section = re.search(r"^\[tool\.setuptools\]\s*$(.*?)(?=^\[)", text, flags=re.S | re.M)
    array = re.search(r"^py-modules\s*=\s*\[(.*?)\]", section.group(1), flags=re.S | re.M) if section else None
    assert array, "pyproject.toml has no [tool.setuptools] py-modules list"
    return set(re.findall(r'"([^"]+)"', array.group(1)))


def test_every_module_is_packaged():
    """pip install . ships the top-level modules that pyproject.toml lists: every one of them."""
    text = (ROOT / "pyproject.toml").read_text()
    listed = listed_modules(text)
    try:  # where a TOML parser is at hand, it must read the same list
        import tomllib
    except ModuleNotFoundError:
        tomllib = None
    if tomllib is not None:
        assert set(tomllib.loads(text)["tool"]["setuptools"]["py-modules"]) == listed
    assert listed == {p.stem for p in ROOT.glob("*.py")}

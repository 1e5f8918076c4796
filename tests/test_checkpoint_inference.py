"""Checkpoints round-trip; inference keeps size and L; folder mode survives bad files."""
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, real_photo
from Folders import colorize_paths, plan_outputs
from Inference import Colorizer
from ModelIO import build_model, load_checkpoint, save_checkpoint
from LoadData import find_images, load_rgb, rgb_to_lab, to_tensor

CPU = torch.device("cpu")


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_model(TINY, "none")
    opt = torch.optim.AdamW(model.decoder.parameters(), lr=1e-3)
    L = torch.rand(2, 1, 64, 72) * 2 - 1
    model.train()
    model(L).mean().backward()  # BatchNorm running stats and optimizer state become non-trivial
    opt.step()
    model.eval()
    save_checkpoint(tmp_path / "c.pt", model, TINY, optimizer=opt, epoch=3, best_metric=0.25, config={"x": 1})
    loaded, ckpt = load_checkpoint(tmp_path / "c.pt", CPU)
    with torch.no_grad():
        assert torch.equal(model(L), loaded(L))
    assert ckpt["epoch"] == 3 and ckpt["best_metric"] == 0.25 and ckpt["model_config"] == TINY
    assert ckpt["optimizer"]["state"]  # optimizer moments saved for resume
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temp file
    # reloadable with weights_only=True and no backbone file
    assert isinstance(torch.load(tmp_path / "c.pt", weights_only=True), dict)


def test_half_precision_release_checkpoint_is_close(tmp_path, tiny_checkpoint):
    model, _ = load_checkpoint(tiny_checkpoint, CPU)
    save_checkpoint(tmp_path / "half.pt", model, TINY, release=True)
    half, _ = load_checkpoint(tmp_path / "half.pt", CPU)
    L = torch.rand(1, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        assert (model(L) - half(L)).abs().max() < 0.02
    assert (tmp_path / "half.pt").stat().st_size < 0.6 * tiny_checkpoint.stat().st_size


def test_bad_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt", CPU)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt", CPU)


@pytest.mark.parametrize("name,size", [("astronaut", 200), ("rocket", 333), ("coffee", 97)])
def test_output_has_input_size_and_keeps_L(tmp_path, tiny_checkpoint, name, size):
    grey = Image.fromarray(real_photo(name, size)).convert("L")
    grey.save(tmp_path / f"{name}.png")
    colorizer = Colorizer.from_checkpoint(tiny_checkpoint, CPU)
    report = colorize_paths(colorizer, [tmp_path / f"{name}.png"], tmp_path, tmp_path / "out", progress=False)
    out = np.asarray(Image.open(tmp_path / "out" / f"{name}.png"))
    assert out.shape == (grey.height, grey.width, 3) and report.written and not report.failed
    L_in = rgb_to_lab(to_tensor(load_rgb(tmp_path / f"{name}.png")))[0]
    L_out = rgb_to_lab(to_tensor(out / 255.0))[0]
    assert (L_in - L_out).abs().max() < 1.0  # 8-bit rounding of the output, nothing more
    assert np.abs(out.astype(int) - np.asarray(grey.convert("RGB"), int)).max() > 0  # it did add colour


def test_colour_input_uses_its_luminance(tiny_checkpoint):
    rgb = real_photo("chelsea", 120) / 255.0
    L_in = rgb_to_lab(to_tensor(rgb))[0].numpy()
    colorizer = Colorizer.from_checkpoint(tiny_checkpoint, CPU)
    out = colorizer.colorize([rgb.astype(np.float32)])[0]
    L_out = rgb_to_lab(to_tensor(out / 255.0))[0].numpy()
    assert out.shape == rgb.shape
    assert np.abs(L_out - L_in).max() < 1.0


def test_folder_mode_skips_corrupt_file_and_reports_it(tmp_path, tiny_checkpoint, photo_dir):
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    for i, f in enumerate(sorted(photo_dir.iterdir())[:3]):
        (inp / ("sub" if i == 2 else "") / f.name).write_bytes(f.read_bytes())
    (inp / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    colorizer = Colorizer.from_checkpoint(tiny_checkpoint, CPU)
    report = colorize_paths(colorizer, find_images(inp), inp, tmp_path / "out", batch_size=2,
                            side_by_side=True, progress=False)
    assert len(report.written) == 3
    assert [f.name for f, _ in report.failed] == ["corrupt.jpg"]
    assert "corrupt.jpg" in report.failed[0][1]
    for f in find_images(inp):
        if f.name == "corrupt.jpg":
            continue
        rel = f.relative_to(inp)
        out = tmp_path / "out" / rel.parent / (rel.stem + ".png")
        assert Image.open(out).size == Image.open(f).size
        compare = Image.open(out.with_name(rel.stem + "_compare.png"))
        assert compare.height == Image.open(f).height and compare.width > 2.9 * Image.open(f).width  # 3 panels


def test_outputs_never_overwrite_inputs_or_each_other(tmp_path):
    files = [tmp_path / "a.png", tmp_path / "a.jpg", tmp_path / "b.jpg"]
    for f in files:
        f.write_bytes(b"x")
    outs = plan_outputs(files, tmp_path, tmp_path)  # output folder == input folder
    assert len(set(outs)) == 3
    assert not set(outs) & set(files)
    assert outs[2] == tmp_path / "b.png"


def test_export_script_writes_a_loadable_release_file(tmp_path, tiny_checkpoint):
    from conftest import load_script
    export = load_script("export_model")
    assert export.main([str(tiny_checkpoint), str(tmp_path / "release.pt")]) == 0
    model, ckpt = load_checkpoint(tmp_path / "release.pt", CPU)
    assert ckpt["optimizer"] is None and ckpt["model_config"] == TINY
    assert all(v.dtype == torch.float16 for v in torch.load(tmp_path / "release.pt", weights_only=True)["encoder"].values())

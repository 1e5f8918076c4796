"""The command line as a user meets it: positional inputs, an output file, limits, one line per error."""
import socket
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

import Engine
from conftest import ROOT, real_photo
from ImageIO import ImageTooLargeError, load_image


def png_header_only(path, width, height):
    """A PNG whose header claims width x height but whose pixel data is cut short (cheap to make)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)))
    return path


def test_help_and_version_answer_without_torch():
    code = "import sys, Engine; Engine.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    done = subprocess.run([sys.executable, "Engine.py", "--version"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("colorize ")


ONNX_WITHOUT_GPU = """
import sys, Engine
Engine.GPU_DRIVER_FILES = tuple(sys.argv[1:2])
rc = Engine.main(["examples/coffee.png", "--output", sys.argv[2]])
print(rc, "torch" in sys.modules)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not Engine.has_torch(),
                    reason="the driver check is Linux's, and matters only where torch is installed")
def test_onnx_colourising_on_a_machine_without_a_gpu_driver_never_imports_torch(tmp_path):
    """The [train] install colourising with the ONNX file on a machine with no GPU driver: torch (2.6 s and
    600 MB to import) is not loaded just to learn there is no GPU. Where a driver file exists, torch is asked."""
    absent, present = tmp_path / "no-driver", tmp_path / "driver"
    present.write_text("NVRM version: fake")
    for driver, torch_loaded in ((absent, "False"), (present, "True")):
        done = subprocess.run([sys.executable, "-c", ONNX_WITHOUT_GPU, str(driver), str(tmp_path / "c.png")],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.stdout.split()[-2:] == ["0", torch_loaded], done.stderr[-500:]


def test_positional_input_and_output_file(tmp_path, tiny_checkpoint, capsys):
    src = tmp_path / "photo.jpg"
    Image.fromarray(real_photo("coffee", 150)).save(src)
    out = tmp_path / "result.png"
    assert Engine.main([str(src), "--output", str(out), "--checkpoint", str(tiny_checkpoint)]) == 0
    assert out.is_file() and Image.open(out).size == Image.open(src).size  # a file, not a folder
    assert "wrote 1 image(s)" in capsys.readouterr().out
    # a folder of inputs cannot go into one file: a clear error, and no folder named result2.png
    assert Engine.main([str(tmp_path), "--output", str(tmp_path / "result2.png"), "--checkpoint", str(tiny_checkpoint)]) == 1
    assert "names an image file" in capsys.readouterr().err and not (tmp_path / "result2.png").exists()


def test_a_bad_file_is_reported_once(tmp_path, tiny_checkpoint, photo_dir, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "good.png").write_bytes(next(photo_dir.glob("*.png")).read_bytes())
    (inp / "bad.png").write_text("not a png")
    assert Engine.main([str(inp), "--output", str(tmp_path / "o"), "--checkpoint", str(tiny_checkpoint)]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("bad.png") == 1
    assert "1 failed" in captured.out and (tmp_path / "o" / "good.png").is_file()


def test_pixel_limit_is_checked_from_the_header_with_our_message(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    huge = png_header_only(tmp_path / "scan.png", 12000, 10000)  # 120 MP claimed, data truncated
    with pytest.raises(ImageTooLargeError) as e:
        load_image(huge, max_pixels=80_000_000)
    text = str(e.value)
    assert "scan.png" in text and "120.0 MP" in text and "80 MP" in text and "--max-megapixels" in text
    assert "bomb" not in text.lower()
    # beyond twice Pillow's own limit it is still our message, never Pillow's
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000_000)
    with pytest.raises(ImageTooLargeError, match="--max-megapixels"):
        load_image(huge, max_pixels=5_000_000)
    # raised above the image's size, the limit lets the header through, and decoding is what fails
    with pytest.raises(Exception) as e:
        load_image(huge, max_pixels=200_000_000)
    assert not isinstance(e.value, ImageTooLargeError)
    small = tmp_path / "small.png"
    Image.fromarray(real_photo("rocket", 400)).save(small)
    assert Engine.main([str(small), "--output", str(tmp_path / "o"), "--checkpoint", str(tiny_checkpoint),
                        "--max-megapixels", "0.01"]) == 1
    assert "--max-megapixels" in capsys.readouterr().err
    assert Engine.main([str(small), "--output", str(tmp_path / "o"), "--checkpoint", str(tiny_checkpoint)]) == 0


def test_busy_port_fails_in_one_line_before_the_model_loads(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        # the checkpoint does not exist: if the model were loaded first, that would be the error
        rc = Engine.main(["--mode", "serve", "--port", str(port), "--checkpoint", str(tmp_path / "no.pt")])
    err = capsys.readouterr().err
    assert rc == 1 and "already in use" in err and "no.pt" not in err and len(err.strip().splitlines()) == 1


def test_real_bugs_keep_their_traceback(monkeypatch, tiny_checkpoint, photo_dir):
    import Inference

    def broken(*a, **k):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    monkeypatch.setattr(Inference.Colorizer, "ab_for", broken)
    with pytest.raises(RuntimeError, match="shapes"):
        Engine.main([str(photo_dir), "--output", str(photo_dir.parent / "x"), "--checkpoint", str(tiny_checkpoint)])


def test_evaluate_prints_one_table_per_folder(photo_dir, tmp_path, tiny_checkpoint, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, names in ((a, ["astronaut.png", "coffee.png"]), (b, ["rocket.jpg"])):
        d.mkdir()
        for n in names:
            (d / n).write_bytes((photo_dir / n).read_bytes())
    assert Engine.main(["--mode", "evaluate", str(a), str(b), "--checkpoint", str(tiny_checkpoint),
                        "--output", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert out.count("| grey |") == 2 and f"{a} (2 photos)" in out and f"{b} (1 photos)" in out
    assert (tmp_path / "ev" / "a" / "metrics.json").is_file() and (tmp_path / "ev" / "b" / "metrics.json").is_file()


def test_backbone_weights_accepts_a_colourizer_checkpoint_and_refuses_junk(tmp_path):
    """--backbone-weights weights/colorizer.pt uses the VGG16 stored in it (it gave an AttributeError traceback);
    a dict that is not tensors gets one clear line."""
    import torch
    from EncoderLayers import BackboneUnavailableError, load_vgg16_features
    from ModelIO import read_checkpoint

    shipped = ROOT / "weights" / "colorizer.pt"
    features = load_vgg16_features(str(shipped))
    stored = read_checkpoint(shipped)["encoder"]
    first = next(k for k in stored if k.endswith("0.weight"))
    assert torch.equal(features[0].weight, stored[first].float())
    junk = tmp_path / "junk.pt"
    torch.save({"a": {"b": 1}}, junk)
    with pytest.raises(BackboneUnavailableError, match="junk.pt: not a state dict of tensors"):
        load_vgg16_features(str(junk))


def test_a_missing_input_is_named_before_anything_loads(tmp_path, capsys):
    """`colorize missing.jpg --output out.png` says the input is missing (it said --output named the wrong thing),
    before the model loads (the checkpoint given does not exist either)."""
    rc = Engine.main([str(tmp_path / "missing.jpg"), "--output", str(tmp_path / "out.png"),
                      "--checkpoint", str(tmp_path / "no.onnx")])
    assert rc == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing.jpg'}: no such file or folder"


def test_a_full_disk_is_named_and_stops_the_run(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    import errno
    import ImageIO

    for name in ("a", "b"):
        Image.fromarray(real_photo("coffee", 64)).save(tmp_path / f"{name}.png")
    calls = []

    def full(path, write, keep_suffix=False):
        calls.append(path)
        def no_space(tmp):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_atomic_write(path, no_space, keep_suffix)
    real_atomic_write = ImageIO.atomic_write
    monkeypatch.setattr("Pictures.atomic_write", full)
    rc = Engine.main([str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--output", str(tmp_path / "out"),
                      "--checkpoint", str(tiny_checkpoint)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(calls) == 1  # the second photo is not attempted
    assert f"error: disk full while writing {tmp_path / 'out' / 'a.png'}" in err
    assert not list((tmp_path / "out").iterdir())  # no temporary file left


def test_malformed_exif_is_ignored_with_a_warning(tmp_path, tiny_checkpoint, capsys):
    """A bad EXIF tag type/count raised struct.error (a folder run aborted, writing nothing); now the photo is
    colourised with a warning, and the rest of the folder too."""
    good = Image.fromarray(real_photo("coffee", 64))
    good.save(tmp_path / "good.jpg")
    buf = tmp_path / "bad.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate
    exif[0x011A] = (72, 1)  # XResolution, a RATIONAL
    good.save(buf, exif=exif.tobytes())
    data = buf.read_bytes()
    # the RATIONAL entry re-tagged as Threshholding, whose values must be SHORTs: Pillow's EXIF rewrite
    # (exif_transpose) then raised struct.error (found by mutating EXIF blocks)
    buf.write_bytes(data.replace(b"\x01\x1a\x00\x05", b"\x01\x07\x00\x05", 1))
    img = load_image(buf)
    assert img.shape == (np.asarray(good).shape[0], np.asarray(good).shape[1], 3)  # not turned: orientation unknown
    assert Engine.main([str(tmp_path), "--output", str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint)]) == 0
    captured = capsys.readouterr()
    assert "bad.jpg: malformed EXIF ignored" in captured.err and "wrote 2 image(s)" in captured.out


def test_a_very_elongated_image_is_refused_from_its_header(tmp_path, capsys):
    """A 39 000 000 x 1 PNG (a few KB on disk) took 5.1 GB; its header is enough to refuse it."""
    from ImageIO import MAX_ASPECT, UnsupportedImageError

    wide = png_header_only(tmp_path / "wide.png", 39_000_000, 1)
    with pytest.raises(UnsupportedImageError, match=r"wide.png: 39000000x1 pixels is too elongated"):
        load_image(wide)
    ok = tmp_path / "ok.png"
    Image.new("L", (MAX_ASPECT * 3, 3)).save(ok)
    assert load_image(ok).shape == (3, MAX_ASPECT * 3)

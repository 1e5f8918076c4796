"""The command line as a user meets it: positional inputs, an output file, limits, one line per error."""
import socket
import struct
import subprocess
import sys
import zlib

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

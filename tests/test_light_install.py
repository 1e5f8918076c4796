"""The default install (ONNX Runtime, no torch): photos, folders, films and the web app run with torch and the
other [train] packages impossible to import; the training modes stop with one line naming the extra.

Each run is a subprocess whose import system refuses torch, torchvision, scikit-image, scipy, matplotlib,
torch-fidelity and onnx (the packages the default install leaves out), as a venv without them would.
.ci/run also builds that venv for real (README command 1).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, real_photo

BLOCKED = ("torch", "torchvision", "skimage", "scipy", "matplotlib", "torch_fidelity", "onnx", "onnxscript")
PRELUDE = f"""
import sys
class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the default install)", name=name)
        return None
sys.meta_path.insert(0, _Refuse())
sys.path.insert(0, {str(ROOT)!r})
"""
MODEL = ROOT / "weights" / "colorizer.onnx"


def light(code: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PRELUDE + code], cwd=cwd, capture_output=True, text=True, timeout=600)


def engine(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return light(f"import runpy; sys.argv = ['Engine.py', *{list(argv)!r}]; "
                 f"runpy.run_path({str(ROOT / 'Engine.py')!r}, run_name='__main__')", cwd)


def test_the_blocker_blocks():
    done = light("import torch")
    assert done.returncode != 0 and "not in the default install" in done.stderr


def test_photos_and_a_film_colourise_without_torch(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_demo_clip import clip_frames, write_clip
    from fractions import Fraction

    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(real_photo("coffee", 200)).convert("L").save(inp / "coffee.jpg")
    frames = clip_frames([real_photo("astronaut", 200)] * 2, (96, 64), 6, 3, 2)
    write_clip(inp / "clip.mp4", frames, (96, 64), Fraction(25), audio=False)
    done = engine(str(inp), "--output", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert "wrote 1 image(s) and 1 video(s)" in done.stdout and "colorizer.onnx" in done.stdout
    out = np.asarray(Image.open(tmp_path / "out" / "coffee.png"))
    assert out.shape == (np.asarray(Image.open(inp / "coffee.jpg")).shape + (3,))
    assert (tmp_path / "out" / "clip.mp4").stat().st_size > 0


def test_colour_points_a_reference_and_a_confidence_map_without_torch(tmp_path):
    """With the guided release, a photo with a point and a reference (and its confidence map); with an older,
    unguided model, the up-front refusal (exit 2, one line): either way without torch."""
    import json

    import onnxruntime as ort

    photo, ref, hints = tmp_path / "coffee.jpg", tmp_path / "ref.jpg", tmp_path / "coffee.json"
    Image.fromarray(real_photo("coffee", 120)).convert("L").save(photo)
    Image.fromarray(real_photo("rocket", 80)).save(ref)
    hints.write_text(json.dumps({"points": [{"x": 10, "y": 20, "color": "#a83a2c", "radius": 3}]}))
    done = engine(str(photo), "--hints", str(hints), "--reference", str(ref), "--confidence",
                  "--output", str(tmp_path / "out.png"))
    meta = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    if meta.get("guided") == "1":
        assert done.returncode == 0, done.stderr
        size = Image.open(photo).size
        assert Image.open(tmp_path / "out.png").size == Image.open(tmp_path / "out.confidence.png").size == size
    else:
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            "error: colorizer.onnx: this model takes no colour points or reference photo (it was trained without "
            "them); use the guided release, weights/colorizer.onnx"]


@pytest.mark.parametrize("mode", ["training", "evaluate", "export"])
def test_training_modes_name_the_extra(mode):
    done = engine("--mode", mode)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: --mode {mode} needs the training install (torch): pip install 'colorizer[train]'"]


def test_a_pt_checkpoint_names_the_extra(tmp_path):
    done = engine(str(ROOT / "examples" / "coins.png"), "--output", str(tmp_path / "o.png"),
                  "--checkpoint", str(ROOT / "weights" / "colorizer.pt"))
    assert done.returncode == 1 and "pip install 'colorizer[train]'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_web_app_answers_without_torch():
    code = f"""
import io
from Inference import Colorizer
from WebApp import create_app
from PIL import Image
app = create_app(Colorizer.from_checkpoint({str(MODEL)!r}))
buf = io.BytesIO(); Image.new("L", (64, 48), 128).save(buf, "PNG")
c = app.test_client()
r = c.post("/api/colorize", data={{"image": (io.BytesIO(buf.getvalue()), "g.png")}})
s = c.post("/api/session", data={{"image": (io.BytesIO(buf.getvalue()), "g.png")}}).json["session"]
hints = '{{"points": [{{"x": 5, "y": 6, "color": "#c81e1e"}}]}}'
again = c.post(f"/api/session/{{s}}/colorize", data={{"hints": hints}})
suggested = c.post(f"/api/session/{{s}}/suggest", data={{"x": "5", "y": "6", "hints": hints}})
print(r.status_code, Image.open(io.BytesIO(r.data)).size, again.status_code, suggested.status_code,
      len(suggested.json["swatches"]) > 0, "torch" in sys.modules)
"""
    done = light(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["200", "(64,", "48)", "200", "200", "True", "False"]

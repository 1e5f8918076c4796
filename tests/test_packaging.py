"""What pip installs: every top-level module, and the two installs' requirement lists agreeing with requirements.txt.

pyproject.toml is read with a small parser of its own (the arrays this project writes), so these tests
run on Python 3.10 too, where the standard library has no tomllib.
"""
import re

from conftest import ROOT


def toml_array(text: str, key: str) -> list[str]:
    """The strings of ``key = [...]`` in ``text`` (one array, comments allowed)."""
    found = re.search(rf"^{re.escape(key)}\s*=\s*\[(.*?)\]", text, flags=re.S | re.M)
    assert found, f"pyproject.toml has no {key} array"
    body = re.sub(r"#.*", "", found.group(1))
    return re.findall(r'"([^"]+)"', body)


def names(specs: list[str]) -> dict[str, str]:
    return {re.split(r"[<>=!~\[ ]", s, maxsplit=1)[0].lower(): s.replace(" ", "") for s in specs}


def test_toml_array_reads_what_it_is_given():
    text = 'a = ["x>=1", # note\n  "y"]\nb = []\n'
    assert toml_array(text, "a") == ["x>=1", "y"] and toml_array(text, "b") == []


def test_every_module_is_packaged():
    """pip install . ships the top-level modules that pyproject.toml lists: every one of them."""
    listed = set(toml_array((ROOT / "pyproject.toml").read_text(), "py-modules"))
    assert listed == {p.stem for p in ROOT.glob("*.py")}


def test_requirements_txt_is_the_default_install_plus_train():
    """requirements.txt (the design card's full list, used by CI) = pyproject's dependencies + the [train]
    extra, with the same version bounds; and the default install holds no torch."""
    text = (ROOT / "pyproject.toml").read_text()
    light, train = names(toml_array(text, "dependencies")), names(toml_array(text, "train"))
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    full = names([ln for ln in lines if ln])
    assert full == {**light, **train}
    assert not {"torch", "torchvision", "scikit-image", "scipy"} & set(light)
    assert {"onnxruntime", "numpy", "pillow", "flask", "waitress", "tqdm", "imageio-ffmpeg"} <= set(light)


def test_the_default_install_ships_the_onnx_model():
    text = (ROOT / "pyproject.toml").read_text()
    weights = toml_array(text, '"share/colorizer/weights"')
    assert weights == ["weights/colorizer.onnx"] and (ROOT / weights[0]).is_file()

"""The web app: every route and error status through Flask's test client, then a real
server (waitress, started by ``Engine.py --mode serve``) driven by headless Chromium."""
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, real_photo

flask = pytest.importorskip("flask", reason="Flask is not installed (pip install -r requirements.txt)")
from Inference import Colorizer  # noqa: E402
from WebApp import create_app  # noqa: E402

EXAMPLE = ROOT / "examples" / "astronaut.png"


@pytest.fixture(scope="module")
def colorizer(tiny_checkpoint):
    return Colorizer.from_checkpoint(tiny_checkpoint, torch.device("cpu"))


@pytest.fixture(scope="module")
def client(colorizer):
    return create_app(colorizer).test_client()


def post(client, data: bytes, name="photo.png", **form):
    return client.post("/api/colorize", data={"image": (io.BytesIO(data), name), **form},
                       content_type="multipart/form-data")


def png_bytes(arr, mode=None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def test_index_page(client):
    r = client.get("/")
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert 'type="file"' in html and "drop" in html and "Download" in html and "20 MB" in html


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json["model_loaded"] is True and r.json["device"] == "cpu" and r.json["checkpoint"] == "tiny.pt"


def test_colorize_returns_png_of_input_size(client):
    r = post(client, EXAMPLE.read_bytes(), "astronaut.png")
    assert r.status_code == 200 and r.mimetype == "image/png"
    out = Image.open(io.BytesIO(r.data))
    assert out.size == Image.open(EXAMPLE).size and out.mode == "RGB"


def test_colorize_jpeg_output_and_colour_input(client):
    photo = real_photo("coffee", 150)
    r = post(client, png_bytes(photo), format="jpeg")
    assert r.status_code == 200 and r.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(r.data)).size == (photo.shape[1], photo.shape[0])


@pytest.mark.parametrize("form,status,words", [
    ({}, 400, "no image"),
    ({"image": (io.BytesIO(b"hello, I am text"), "fake.jpg")}, 400, "not a readable image"),
    ({"image": (io.BytesIO(b""), "empty.png")}, 400, "empty"),
])
def test_bad_requests_get_json_400(client, form, status, words):
    r = client.post("/api/colorize", data=form, content_type="multipart/form-data")
    assert r.status_code == status and words in r.json["error"]


def test_bad_options_get_400(client):
    assert post(client, EXAMPLE.read_bytes(), format="gif").status_code == 400
    r = post(client, EXAMPLE.read_bytes(), temperature="hot")
    assert r.status_code == 400 and "temperature" in r.json["error"]


def test_unsupported_type_gets_415(client):
    buf = io.BytesIO()
    Image.fromarray(real_photo("chelsea", 64)).save(buf, format="GIF")
    r = post(client, buf.getvalue(), "cat.gif")
    assert r.status_code == 415 and "GIF" in r.json["error"]


def test_upload_over_25mb_gets_413(client):
    r = post(client, os.urandom(25 * 2 ** 20), "huge.jpg")
    assert r.status_code == 413 and "too large" in r.json["error"]


def test_decompression_bomb_gets_413(client):
    bomb = png_bytes(np.zeros((7000, 7000), bool), "1")  # 49 MP in a tiny file
    assert len(bomb) < 2 ** 20
    r = post(client, bomb, "bomb.png")
    assert r.status_code == 413 and "too large" in r.json["error"]


def test_pixel_limit_is_configurable(colorizer):
    small = create_app(colorizer, max_megapixels=0.01).test_client()
    assert post(small, EXAMPLE.read_bytes()).status_code == 413


def test_concurrent_requests_are_safe(client):
    data = png_bytes(real_photo("rocket", 96))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: post(client, data), range(8)))
    assert all(r.status_code == 200 for r in results)
    assert len({r.data for r in results}) == 1  # same input, same output: no cross-talk


def test_unknown_route_is_json_404(client):
    r = client.get("/nope")
    assert r.status_code == 404 and "error" in r.json


# ----------------------------------------------------------------------------- real browser

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "Engine.py"), "--mode", "serve", "--port", str(port),
                             "--checkpoint", str(tiny_checkpoint), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("server exited: " + proc.stdout.read())
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("server did not start within 60 s")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_real_server_answers_curl_style_request(server):
    boundary = "----colorizer"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + EXAMPLE.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(server + "/api/colorize", data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["Content-Type"] == "image/png"
        assert Image.open(io.BytesIO(r.read())).size == Image.open(EXAMPLE).size


def test_browser_upload_shows_result_at_natural_size(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium); the browser test cannot run")
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-quic"])
        except Exception as e:  # a browser that cannot start is a skip with its reason, never a pass
            pytest.skip(f"Chromium at {chromium} could not be started: {str(e).splitlines()[0]}")
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(server + "/")
        for example in sorted((ROOT / "examples").glob("*.png")):
            page.set_input_files("#file", str(example))
            page.wait_for_function("document.getElementById('status').textContent.startsWith('Done')", timeout=60000)
            size = page.evaluate("[document.getElementById('result-img').naturalWidth, "
                                 "document.getElementById('result-img').naturalHeight]")
            assert tuple(size) == Image.open(example).size
            assert page.is_visible("#download")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        # an error is shown to the person, in words
        bad = tmp_path / "notes.jpg"
        bad.write_text("not a photo")
        page.set_input_files("#file", str(bad))
        page.wait_for_selector("#status.error", timeout=30000)
        assert "photo" in page.text_content("#status")
        browser.close()


def test_images_in_flight_are_bounded(colorizer, monkeypatch):
    """Decode + colourise hold a slot: with max_concurrent=2, five simultaneous uploads never run 3 at once."""
    import WebApp

    active, peak, guard = [0], [0], __import__("threading").Lock()
    real = WebApp.load_image

    def slow_load(*args, **kwargs):
        with guard:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.3)
        try:
            return real(*args, **kwargs)
        finally:
            with guard:
                active[0] -= 1
    monkeypatch.setattr(WebApp, "load_image", slow_load)
    app = create_app(colorizer, max_concurrent=2)
    data = EXAMPLE.read_bytes()

    def one(_):
        return post(app.test_client(), data).status_code
    with ThreadPoolExecutor(5) as pool:
        codes = list(pool.map(one, range(5)))
    assert codes == [200] * 5
    assert peak[0] == 2


def test_too_many_pixels_is_413_with_the_servers_limit(colorizer):
    client = create_app(colorizer, max_megapixels=0.1).test_client()
    r = post(client, EXAMPLE.read_bytes())
    assert r.status_code == 413 and "0.1 MP" in r.json["error"] and "0.3 MP" in r.json["error"]

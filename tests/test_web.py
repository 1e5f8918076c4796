"""The web app: every route and error status through Flask's test client, then a real
server (waitress, started by ``Engine.py --mode serve``) driven by headless Chromium."""
import io
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor, as_completed

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
    assert 'type="file"' in html and "drop" in html and "Download" in html and "20 MiB" in html


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
    r = post(client, EXAMPLE.read_bytes(), format="gif")
    assert r.status_code == 400 and "png, jpeg, jpg or webp" in r.json["error"]
    r = post(client, EXAMPLE.read_bytes(), temperature="hot")
    assert r.status_code == 400 and "temperature" in r.json["error"]


@pytest.mark.parametrize("fmt,mime", [("png", "image/png"), ("jpeg", "image/jpeg"), ("jpg", "image/jpeg"),
                                      ("webp", "image/webp"), ("WebP", "image/webp")])
def test_output_format_names(client, fmt, mime):
    r = post(client, png_bytes(real_photo("rocket", 48)), format=fmt)
    assert r.status_code == 200 and r.mimetype == mime
    assert Image.open(io.BytesIO(r.data)).format == mime.split("/")[1].upper()


def test_unsupported_type_gets_415(client):
    buf = io.BytesIO()
    Image.fromarray(real_photo("chelsea", 64)).save(buf, format="PPM")
    r = post(client, buf.getvalue(), "cat.ppm")
    assert r.status_code == 415 and "PPM" in r.json["error"] and "GIF" in r.json["error"]


@pytest.mark.parametrize("fmt", ["MPO", "GIF"])
def test_multi_frame_files_use_their_first_frame(client, fmt):
    """A camera's MPO (multi-picture JPEG) and an animated GIF are accepted; the dark first frame is used."""
    dark, light = Image.new("RGB", (40, 30), (20, 20, 20)), Image.new("RGB", (40, 30), (240, 240, 240))
    buf = io.BytesIO()
    dark.save(buf, fmt, save_all=True, append_images=[light])
    assert Image.open(io.BytesIO(buf.getvalue())).format == fmt and Image.open(buf).n_frames == 2
    r = post(client, buf.getvalue(), f"camera.{fmt.lower()}")
    assert r.status_code == 200, r.json
    out = np.asarray(Image.open(io.BytesIO(r.data)).convert("L"))
    assert out.shape == (30, 40) and out.mean() < 60


def multipart_of_size(total: int) -> tuple[bytes, str]:
    """A multipart request body of exactly ``total`` bytes: a small PNG padded after its end (decoders ignore it)."""
    boundary = "----exact"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    image = png_bytes(real_photo("coffee", 48))
    return head + image + bytes(total - len(head) - len(image) - len(tail)) + tail, \
        f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("extra,status", [(0, 200), (1, 413)])
def test_upload_limit_is_exact(client, extra, status):
    """20 MiB (the request body, as sent) is accepted; one byte more is 413, naming the limit in MiB."""
    body, ctype = multipart_of_size(20 * 2 ** 20 + extra)
    r = client.post("/api/colorize", data=body, content_type=ctype)
    assert r.status_code == status
    if status == 413:
        assert r.json["error"] == "upload too large (20.0 MiB; this server's limit is 20 MiB per request)"


def test_big_form_field_413_names_that_limit(client):
    """A 413 for a form field over Flask's form memory limit does not blame the 20 MiB upload limit."""
    r = post(client, EXAMPLE.read_bytes(), temperature="1" * 600_000)
    assert r.status_code == 413 and "form field" in r.json["error"] and "20 MiB" not in r.json["error"]


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


def test_405_says_which_methods_are_allowed(client):
    r = client.get("/api/colorize")
    assert r.status_code == 405 and "error" in r.json
    assert set(r.headers["Allow"].replace(" ", "").split(",")) >= {"POST"}
    assert "GET" in client.post("/healthz").headers["Allow"]


@pytest.mark.parametrize("method,path", [("get", "/"), ("get", "/healthz"), ("get", "/nope"),
                                         ("post", "/api/colorize")])
def test_security_headers_on_every_response(client, method, path):
    r = getattr(client, method)(path)
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    policy = r.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy and "unsafe" not in policy


def test_page_policy_allows_exactly_its_own_inline_script_and_style(client):
    """The page's inline <script> and <style> are allowed by hash (the browser test checks the page works)."""
    import base64
    import hashlib
    import re

    r = client.get("/")
    html, policy = r.get_data(as_text=True), r.headers["Content-Security-Policy"]
    for tag in ("script", "style"):
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        assert bodies
        for body in bodies:
            digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in policy.split(f"{tag}-src")[1].split(";")[0]
    assert "connect-src 'self'" in policy and "img-src 'self' blob:" in policy


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


@contextmanager
def chromium(*extra_args: str):
    """A headless Chromium (playwright), closed at the end; the test skips, saying why, without playwright,
    without a Chromium on PATH, or when it cannot start (never a pass)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium); the browser test cannot run")
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu", *extra_args])
        except Exception as e:
            pytest.skip(f"Chromium at {path} could not be started: {str(e).splitlines()[0]}")
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def served(colorizer: Colorizer):
    """WebApp's waitress server for ``colorizer`` on a free loopback port, in a thread -> its URL; closed at the end."""
    import threading

    import WebApp

    server, _ = WebApp.build_server(colorizer, "127.0.0.1", 0)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        yield "http://%s:%s/" % server.effective_listen[0][:2]
    finally:
        server.close()


def csp_refusals(page) -> list[str]:
    """The console lines of ``page`` saying its Content-Security-Policy refused something (kept up to date): the
    page runs under that policy, so nothing of its own may be refused."""
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    return refused


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
    with chromium("--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--disable-quic") as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        refused = csp_refusals(page)
        page.goto(server + "/")
        for example in sorted((ROOT / "examples").glob("*.png")):
            page.set_input_files("#file", str(example))
            # a selector, not wait_for_function: that evaluates a string, which the page's policy forbids
            page.wait_for_selector("#status:text-matches('^Done')", timeout=60000)
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
        assert page.evaluate("getComputedStyle(document.getElementById('drop')).borderStyle") == "dashed"  # CSS ran
    assert refused == []


def test_decode_colourise_and_encode_all_hold_a_turn(colorizer, monkeypatch):
    """With max_concurrent=2, five simultaneous uploads never have more than 2 images in work, where an image
    is in work from the start of its decoding to the end of its encoding (each stage made slow here)."""
    import threading

    import WebApp
    import WebUploads

    holding, peak, guard = set(), [0], threading.Lock()

    def instrument(stage, real, starts=False, ends=False):
        def slow(*args, **kwargs):
            with guard:
                if starts:
                    holding.add(threading.get_ident())
                assert threading.get_ident() in holding, f"{stage} ran outside decode..encode"
                peak[0] = max(peak[0], len(holding))
            time.sleep(0.1)
            try:
                return real(*args, **kwargs)
            finally:
                if ends:
                    with guard:
                        holding.discard(threading.get_ident())
        return slow
    monkeypatch.setattr(WebUploads, "load_image", instrument("decode", WebUploads.load_image, starts=True))
    monkeypatch.setattr(colorizer, "ab_for", instrument("colourise", colorizer.ab_for))
    monkeypatch.setattr(WebApp, "recombine_image", instrument("recombine", WebApp.recombine_image))
    monkeypatch.setattr(WebApp, "encode_image", instrument("encode", WebApp.encode_image, ends=True))
    app = create_app(colorizer, max_concurrent=2)
    data = png_bytes(real_photo("rocket", 48))
    with ThreadPoolExecutor(5) as pool:
        codes = list(pool.map(lambda _: post(app.test_client(), data).status_code, range(5)))
    assert codes == [200] * 5
    assert peak[0] == 2


def test_full_queue_gets_503_with_retry_after(colorizer, monkeypatch):
    """One upload in work and one waiting: further uploads are refused at once, not queued without bound."""
    import threading

    import WebUploads

    release, real = threading.Event(), WebUploads.load_image

    def held(*args, **kwargs):
        release.wait(10)
        return real(*args, **kwargs)
    monkeypatch.setattr(WebUploads, "load_image", held)
    app = create_app(colorizer, max_concurrent=1, max_queue=1)
    data = png_bytes(real_photo("rocket", 48))
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(lambda: post(app.test_client(), data)) for _ in range(4)]
        done = as_completed(futures, timeout=5)
        refused = [next(done).result(), next(done).result()]  # the other two are held
        release.set()
        codes = sorted(f.result().status_code for f in futures)
    assert codes == [200, 200, 503, 503]
    assert all(r.status_code == 503 and int(r.headers["Retry-After"]) >= 1 and "busy" in r.json["error"]
               for r in refused)


def test_too_many_pixels_is_413_with_the_servers_limit(colorizer):
    client = create_app(colorizer, max_megapixels=0.1).test_client()
    r = post(client, EXAMPLE.read_bytes())
    assert r.status_code == 413 and "0.1 MP" in r.json["error"] and "0.3 MP" in r.json["error"]

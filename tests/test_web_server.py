"""The web app under its real waitress server (WebApp.build_server, in this process, on a loopback port):
/healthz answers while every turn and queue place is taken, the body limit is enforced before the body
is read, nothing goes to disk, a trickled request is cut off; and SIGTERM stops `Engine.py --mode serve`."""
import http.client
import io
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, real_photo

pytest.importorskip("flask", reason="Flask is not installed (pip install -r requirements.txt)")
pytest.importorskip("waitress", reason="waitress is not installed (pip install -r requirements.txt)")
import WebApp  # noqa: E402
import WebUploads  # noqa: E402
from Inference import Colorizer  # noqa: E402

LIMIT = 20 * 2 ** 20


@pytest.fixture(scope="module")
def colorizer(tiny_checkpoint):
    return Colorizer.from_checkpoint(tiny_checkpoint, torch.device("cpu"))


@pytest.fixture
def start(colorizer):
    """start(**build_server options) -> (host, port) of a running server; all stopped at the end."""
    servers = []

    def run(**options):
        server, _ = WebApp.build_server(colorizer, "127.0.0.1", 0, **options)
        threading.Thread(target=server.run, daemon=True).start()
        servers.append(server)
        return server.effective_listen[0]
    yield run
    for server in servers:
        server.close()


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def multipart(data: bytes, pad_to: int | None = None) -> tuple[bytes, dict]:
    boundary = "----server-test"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    pad = bytes(pad_to - len(head) - len(data) - len(tail)) if pad_to else b""  # after the PNG's end: ignored
    return head + data + pad + tail, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def request(address, method, path, body=None, headers=None, timeout=30):
    conn = http.client.HTTPConnection(*address, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def test_healthz_answers_while_every_turn_and_queue_place_is_taken(start, monkeypatch):
    """Six uploads held in decoding (1 in work, 1 waiting, 4 refused with 503): /healthz and / still answer fast."""
    release, real = threading.Event(), WebUploads.load_image
    monkeypatch.setattr(WebUploads, "load_image", lambda *a, **k: (release.wait(20), real(*a, **k))[1])
    address = start(max_concurrent=1, max_queue=1, threads=1)
    body, headers = multipart(png(real_photo("rocket", 48)))
    with ThreadPoolExecutor(6) as pool:
        uploads = [pool.submit(request, address, "POST", "/api/colorize", body, headers) for _ in range(6)]
        time.sleep(1.0)  # all six have arrived and been dispatched
        try:
            for path in ("/healthz", "/"):
                t = time.perf_counter()
                assert request(address, "GET", path, timeout=5)[0] == 200
                assert time.perf_counter() - t < 1.0
        finally:
            release.set()
        codes = sorted(u.result(timeout=30)[0] for u in uploads)
    assert codes == [200, 200, 503, 503, 503, 503]


def test_body_over_the_limit_is_refused_before_it_is_sent(start):
    """Content-Length one byte over 20 MiB: a JSON 413 naming the limit, without the body being read."""
    conn = socket.create_connection(start(), timeout=10)
    with conn:
        conn.sendall(b"POST /api/colorize HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     + f"Content-Length: {LIMIT + 1}\r\n\r\n".encode())
        reply = conn.makefile("rb").read()  # the server answers and closes
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"application/json" in head and b"nosniff" in head
    assert json.loads(payload)["error"] == "upload too large (20.0 MiB; this server's limit is 20 MiB per request)"


def test_body_at_the_limit_is_served_and_nothing_touches_the_disk(start, monkeypatch):
    """A 20 MiB request body and a > 1 MiB result pass through waitress and Flask without a temporary file."""
    def refuse(*_a, **_k):
        raise AssertionError("a temporary file was created")
    for name in ("TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile", "mkstemp", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    noise = np.random.default_rng(0).integers(0, 256, (700, 900), dtype=np.uint8)  # compresses badly
    body, headers = multipart(png(noise), pad_to=LIMIT)
    assert len(body) == LIMIT
    status, answer, payload = request(start(), "POST", "/api/colorize", body, headers, timeout=60)
    assert status == 200, payload[:200]
    assert answer["Content-Type"] == "image/png" and len(payload) > 2 ** 20
    assert Image.open(io.BytesIO(payload)).size == (900, 700)


def test_a_trickled_request_is_cut_off_at_the_deadline(start):
    """A client sending its body a byte at a time (never idle long enough for the idle timeout) gets 408."""
    conn = socket.create_connection(start(request_deadline_s=1.5, check_every_s=1), timeout=10)
    with conn:
        conn.sendall(b"POST /api/colorize HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 1000\r\n\r\n")
        t, reply = time.monotonic(), b""
        conn.settimeout(0.2)
        while time.monotonic() - t < 8 and not reply:
            try:
                conn.send(b"x")
                reply = conn.recv(4096)
            except socket.timeout:
                continue
            except OSError:  # reset after the answer: the connection was cut
                break
        took = time.monotonic() - t
        # The headers and the body may arrive in separate segments: read on until the server closes.
        while reply and b"within" not in reply and time.monotonic() - t < 8:
            try:
                more = conn.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            if not more:
                break
            reply += more
    assert reply.startswith(b"HTTP/1.1 408") and b"within 1.5 s" in reply
    assert took < 4


def test_sigterm_stops_the_server_cleanly(tiny_checkpoint):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(ROOT / "Engine.py"), "--mode", "serve", "--port", str(port),
                             "--checkpoint", str(tiny_checkpoint), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except OSError:
                time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=20)[0]
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert "server stopped" in output

"""The web colourizer: a Flask app (one page + a small HTTP API) over Inference.py, and its waitress server.

Owns the HTTP surface only; decoding is ImageIO.load_image and colourising is
Inference.Colorizer, the same code the command line uses. The model is loaded once, at
start-up. At most ``max_concurrent`` uploads are decoded, colourised and encoded at once and at
most ``max_queue`` more wait their turn; any further upload is answered 503 with Retry-After
at once, so waiting uploads never take the threads that /healthz and the page need. Forward
passes are serialised by one lock. Uploads and results stay in memory, never on disk (request
bodies up to the upload limit are kept in memory by waitress and Flask), and their file names
are never used as paths. The server's memory therefore has a ceiling: the start-up RSS, plus
``connections`` x the upload limit (bodies being received or waiting), plus ``max_concurrent``
x (the upload limit + about 12 bytes per pixel of the largest allowed image; 16 for a colour JPEG: +632 MiB
measured for 40 MP). A reference photo counts towards the same upload and pixel limits; it is decoded,
shrunk, reduced to its colour distribution (a few hundred numbers) and dropped before the photo itself is
decoded, so it adds no second image to that ceiling (measured: a 40 MP reference with a 40 MP photo, +632 MiB).
The page's editing sessions (WebSessions.py) add at most ``session_mb`` of kept photos (default 400 MiB), plus
the photo being opened, which is decoded (within the terms above) before older sessions make room for it.

Routes:
    GET  /              the single page (web/index.html), under a Content-Security-Policy
    POST /api/colorize  multipart field "image" -> image/png (or format=jpeg|jpg|webp), optional
                        "temperature" for classification models; for a guided model (healthz "guided")
                        also optional "hints" (the --hints JSON, {"points": [{"x", "y", "color", "radius"}]},
                        as a text field or a file part) and "reference" (a colour photo, a file part);
                        errors are JSON {"error": "..."}, one line naming the field, with 400 / 408 / 413 /
                        415, or 503 with Retry-After when the queue is full
    GET  /healthz       {"status", "model_loaded", "guided", "device", "checkpoint", ...}
    /api/session...     the page's editing sessions for a guided model: a photo uploaded once, colourised again
                        as its points change, suggested colours at a point, a confidence map (WebSessions.py)

Usage:
    app = create_app(Colorizer.from_checkpoint("weights/colorizer.onnx"))
    python Engine.py --mode serve --port 8000      # serve(): the same app under waitress
    curl -F image=@photo.jpg -F hints=@photo.json -F reference=@colour.jpg http://127.0.0.1:8000/api/colorize -o out.png
"""
from __future__ import annotations

import base64
import errno
import hashlib
import io
import math
import re
import signal
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from flask import Flask, jsonify, request, send_file
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from FullResolution import recombine_image
from Inference import Colorizer
from Pictures import encode_image
from References import LIMITS, asset_dir
from WebServer import (SECURITY_HEADERS, TRIM_AFTER_PIXELS, make_server, release_memory, tune_malloc,
                       upload_too_large)
from WebSessions import SessionStore, add_session_routes
from WebUploads import InMemoryRequest, Refused, decode_part, error, output_type, photo_guidance, upload_guidance

QUEUE = 6  # uploads that may wait for a turn beyond max_concurrent (bodies only: waitress holds them anyway); more: 503


class Busy(Exception):
    """Every turn and every place in the queue is taken."""


class Admission:
    """At most ``running`` requests inside at once and ``waiting`` more waiting for a turn; others are refused."""

    def __init__(self, running: int, waiting: int):
        self.turns = threading.BoundedSemaphore(running)
        self.running, self.capacity, self.inside, self.lock = running, running + waiting, 0, threading.Lock()
        self.seconds = 1.0  # moving average of one turn, for Retry-After

    @contextmanager
    def turn(self):
        """Wait for a turn (raises Busy at once when the queue is full); the body runs inside the turn."""
        with self.lock:
            if self.inside >= self.capacity:
                raise Busy
            self.inside += 1
        try:
            with self.turns:
                t = time.monotonic()
                yield
                self.seconds = 0.8 * self.seconds + 0.2 * (time.monotonic() - t)
        finally:
            with self.lock:
                self.inside -= 1

    def retry_after(self) -> int:
        """Whole seconds after which a place is likely free: a turn ends about every (average turn / running)."""
        return max(1, math.ceil(self.seconds / self.running))


def page_policy(page: str) -> str:
    """The page's Content-Security-Policy: its own inline <script> and <style> (by hash), blob: images, nothing else."""
    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in bodies)
    return (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
            "img-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def check_port(host: str, port: int) -> None:
    """Raise OSError with one clear line if ``host:port`` cannot be listened on (before the model loads)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as waitress does
        try:
            probe.bind((host, port))
        except OSError as e:
            why = "is already in use; stop the other server or choose another --port" if e.errno == errno.EADDRINUSE \
                else f"cannot be listened on ({e.strerror})"
            raise OSError(f"{host}:{port} {why}") from None


def too_large_message(limit: int) -> str:
    """Which limit the request's 413 hit: the whole upload's (in MiB), or a form field's / the number of parts."""
    if request.content_length is None or request.content_length > limit:
        return upload_too_large(request.content_length, limit)
    return (f"request too large: a form field other than the image is over {request.max_form_memory_size} "
            f"bytes, or the form has over {request.max_form_parts} parts")


def create_app(colorizer: Colorizer, max_upload_mb: float = LIMITS["web_upload_mb"],
               max_megapixels: float = LIMITS["web_megapixels"], max_concurrent: int = LIMITS["web_concurrent"],
               max_queue: int = QUEUE, sessions: SessionStore | None = None) -> Flask:
    """Build the Flask app around an already loaded ``colorizer`` (shared by all requests).

    ``max_upload_mb`` is in MiB (2**20 bytes) and bounds the whole request body; ``sessions`` holds the page's
    editing sessions (default: LIMITS' web_sessions, web_session_mb and web_session_minutes)."""
    app = Flask(__name__, static_folder=None)
    app.request_class = InMemoryRequest
    app.config["MAX_CONTENT_LENGTH"] = limit = int(max_upload_mb * 2 ** 20)
    max_pixels = int(max_megapixels * 1e6)
    lock, admission = threading.Lock(), Admission(max_concurrent, max_queue)
    page = (asset_dir() / "web" / "index.html").read_text(encoding="utf-8")
    page = page.replace("{{MAX_MB}}", f"{max_upload_mb:g}").replace("{{MAX_MP}}", f"{max_megapixels:g}")
    page = page.replace("{{HINTS_HIDDEN}}", "" if colorizer.guided else " hidden")  # hints: guided models only
    page = page.replace("{{GUIDED}}", "1" if colorizer.guided else "0")  # the page edits points in a session
    page_headers = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-cache",
                    "Content-Security-Policy": page_policy(page)}

    @app.after_request
    def security_headers(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_e):
        return error(413, too_large_message(limit))

    @app.errorhandler(Refused)  # a route's one-line error answer (WebUploads), wherever it is raised
    def refused(e: Refused):
        return error(e.status, e.message)

    @app.errorhandler(Busy)
    def busy(_e):
        return error(503, f"the server is busy ({max_concurrent} images in work, {max_queue} waiting); "
                          "try again shortly", {"Retry-After": str(admission.retry_after())})

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):  # keeps the exception's own headers, e.g. Allow on a 405
        headers = {k: v for k, v in e.get_headers() if k.lower() != "content-type"}
        return error(e.code or 500, e.description or e.name, headers)

    sessions = sessions or session_store()
    add_session_routes(app, colorizer, lock, admission, sessions, max_pixels)

    @app.get("/")
    def index():
        return page, 200, page_headers

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", model_loaded=True, guided=colorizer.guided, device=str(colorizer.device),
                       checkpoint=colorizer.name, loss=colorizer.cfg.loss, image_size=colorizer.cfg.image_size)

    @app.post("/api/colorize")
    def colorize():
        fmt = (request.args.get("format") or "").lower()
        with admission.turn():  # decode + colourise + encode inside the turn: that bounds the server's memory
            fmt = (request.form.get("format") or fmt or "png").lower()
            result = colorize_upload(colorizer, lock, fmt, max_pixels)
        if isinstance(result, tuple):
            data, mime, name, pixels = result
            if pixels > TRIM_AFTER_PIXELS:
                release_memory()
            return send_file(io.BytesIO(data), mimetype=mime, download_name=name)
        return result

    return app


def colorize_upload(colorizer: Colorizer, lock: threading.Lock, fmt: str, max_pixels: int):
    """The request's upload -> (encoded bytes, mime type, download name, pixels), or an error response."""
    try:
        mime, suffix = output_type(fmt)
    except Refused as e:
        return error(e.status, e.message)
    temperature = request.form.get("temperature") or request.args.get("temperature")
    try:
        temperature = None if temperature in (None, "") else float(temperature)
        if temperature is not None and not 0 < temperature <= 5:
            raise ValueError
    except ValueError:
        return error(400, "temperature must be a number in (0, 5]")
    upload = request.files.get("image")
    if upload is None:
        return error(400, 'no image: send the photo as multipart form field "image"')
    try:
        if upload.stream.seek(0, io.SEEK_END) == 0:
            raise Refused(400, "the uploaded file is empty")
        points, reference = upload_guidance(colorizer, max_pixels)  # before the photo: one image decoded at a time
        img = decode_part(upload, "upload", max_pixels, unreadable=400)
        guidance = photo_guidance(points, reference, img.shape[1], img.shape[0])
    except Refused as e:
        return error(e.status, e.message)
    try:
        with lock:  # one forward pass at a time: the model and its buffers are shared
            ab = colorizer.ab_for([img], temperature=temperature, guidance=guidance)
    except ValueError as e:  # e.g. a temperature that an ONNX export cannot change
        return error(400, str(e))
    try:
        data = encode_image(recombine_image(img, np.asarray(ab[0]), bgr=True), suffix, bgr=True)
    except ValueError:
        return error(500, "could not encode the result")
    stem = Path(upload.filename or "image").stem[:80] or "image"
    return data, mime, f"{stem}_colorized{suffix}", img.shape[0] * img.shape[1]


def session_store(session_mb: float = LIMITS["web_session_mb"]) -> SessionStore:
    """The page's editing sessions: at most LIMITS' web_sessions, ``session_mb`` MiB of photos, web_session_minutes."""
    return SessionStore(LIMITS["web_sessions"], int(session_mb * 2 ** 20), LIMITS["web_session_minutes"] * 60)


def build_server(colorizer: Colorizer, host: str = "127.0.0.1", port: int = 8000, threads: int = 4,
                 max_megapixels: float = LIMITS["web_megapixels"], max_concurrent: int = LIMITS["web_concurrent"],
                 max_queue: int = QUEUE, max_upload_mb: float = LIMITS["web_upload_mb"],
                 session_mb: float = LIMITS["web_session_mb"], **server_options):
    """The app under a waitress server (WebServer.make_server; not yet running) -> (server, worker threads).

    ``threads`` is raised to max_concurrent + max_queue + 2, so that uploads in work or waiting for a
    turn never take the last threads: the page and /healthz keep answering. ``server_options``:
    connections, request_deadline_s, idle_timeout_s, check_every_s."""
    app = create_app(colorizer, max_upload_mb, max_megapixels, max_concurrent, max_queue, session_store(session_mb))
    threads = max(threads, max_concurrent + max_queue + 2)
    return make_server(app, host, port, threads, int(max_upload_mb * 2 ** 20), **server_options), threads


def serve(colorizer: Colorizer, host: str = "127.0.0.1", port: int = 8000, threads: int = 4,
          max_megapixels: float = LIMITS["web_megapixels"], max_concurrent: int = LIMITS["web_concurrent"],
          max_queue: int = QUEUE, max_upload_mb: float = LIMITS["web_upload_mb"],
          session_mb: float = LIMITS["web_session_mb"], **server_options) -> None:
    """Run build_server's server until SIGINT or SIGTERM (docker stop, systemd), then stop cleanly."""
    tune_malloc()  # before waitress starts its threads, so that they share few malloc arenas
    server, threads = build_server(colorizer, host, port, threads, max_megapixels, max_concurrent, max_queue,
                                   max_upload_mb, session_mb, **server_options)

    def stop(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)  # waitress stops on it, as on Ctrl-C
    previous = signal.signal(signal.SIGTERM, stop)
    print(f"serving the colourizer on http://{host}:{port}/ (model {colorizer.name}, {colorizer.device}; "
          f"images up to {max_megapixels:g} MP and {max_upload_mb:g} MiB, {max_concurrent} at a time and "
          f"{max_queue} waiting, {threads} threads; editing sessions keep up to {session_mb:g} MiB of photos)",
          flush=True)
    try:
        server.run()  # returns after SIGINT/SIGTERM, once the running requests finished (5 s at most)
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()
    print("server stopped", flush=True)

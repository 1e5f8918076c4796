"""The web colourizer: a Flask app (one page + a small HTTP API) over Inference.py.

Owns the HTTP surface only; decoding is ImageIO.load_image and colourising is
Inference.Colorizer, the same code the command line uses. The model is loaded once, at
start-up. A semaphore lets at most ``max_concurrent`` requests decode and colourise at once
(others wait their turn), so the server's memory has a ceiling whatever the uploads: about
the start-up RSS plus ``max_concurrent`` x 12 bytes per pixel of the largest allowed image.
Forward passes are serialised by one lock. Uploads are read in memory and never written to
disk, and their file names are never used as paths.

Routes:
    GET  /              the single page (web/index.html)
    POST /api/colorize  multipart field "image" -> image/png (or jpeg with format=jpeg),
                        optional "temperature" for classification models; errors are
                        JSON {"error": "..."} with 400 / 413 / 415
    GET  /healthz       {"status", "model_loaded", "device", "checkpoint", ...}

Usage:
    app = create_app(Colorizer.from_checkpoint("weights/colorizer.onnx"))
    python Engine.py --mode serve --port 8000      # the same app under waitress
"""
from __future__ import annotations

import errno
import io
import socket
import threading
from pathlib import Path

from flask import Flask, jsonify, request, send_file
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from FullResolution import recombine_image
from Inference import Colorizer, encode_image
from ImageIO import ImageReadError, ImageTooLargeError, UnsupportedImageError, load_image
from References import LIMITS, asset_dir

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
OUTPUT_TYPES = {"png": ("image/png", ".png"), "jpeg": ("image/jpeg", ".jpg"), "jpg": ("image/jpeg", ".jpg")}


def error(status: int, message: str):
    """A JSON error response: {"error": message} with ``status``."""
    response = jsonify(error=message)
    response.status_code = status
    return response


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


def create_app(colorizer: Colorizer, max_upload_mb: float = LIMITS["web_upload_mb"],
               max_megapixels: float = LIMITS["web_megapixels"], max_concurrent: int = LIMITS["web_concurrent"]) -> Flask:
    """Build the Flask app around an already loaded ``colorizer`` (shared by all requests)."""
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 2 ** 20)
    max_pixels = int(max_megapixels * 1e6)
    lock = threading.Lock()
    slots = threading.BoundedSemaphore(max_concurrent)
    page = (asset_dir() / "web" / "index.html").read_text(encoding="utf-8")
    page = page.replace("{{MAX_MB}}", f"{max_upload_mb:g}").replace("{{MAX_MP}}", f"{max_megapixels:g}")

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_e):
        return error(413, f"upload too large: the limit is {max_upload_mb:g} MB")

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        return error(e.code or 500, e.description or e.name)

    @app.get("/")
    def index():
        return page, 200, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-cache"}

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", model_loaded=True, device=str(colorizer.device), checkpoint=colorizer.name,
                       loss=colorizer.cfg.loss, image_size=colorizer.cfg.image_size)

    @app.post("/api/colorize")
    def colorize():
        upload = request.files.get("image")
        if upload is None:
            return error(400, 'no image: send the photo as multipart form field "image"')
        fmt = (request.form.get("format") or request.args.get("format") or "png").lower()
        if fmt not in OUTPUT_TYPES:
            return error(400, f"format must be png or jpeg, not {fmt!r}")
        temperature = request.form.get("temperature") or request.args.get("temperature")
        try:
            temperature = None if temperature in (None, "") else float(temperature)
            if temperature is not None and not 0 < temperature <= 5:
                raise ValueError
        except ValueError:
            return error(400, "temperature must be a number in (0, 5]")
        data = upload.read()
        if not data:
            return error(400, "the uploaded file is empty")
        mime, suffix = OUTPUT_TYPES[fmt]
        with slots:  # bounds the images decoded and colourised at once, hence the server's memory
            try:
                img = load_image(io.BytesIO(data), name="upload", max_pixels=max_pixels, formats=ACCEPTED_FORMATS)
            except ImageTooLargeError as e:
                return error(413, f"upload: image too large ({e.megapixels:.1f} MP; this server's limit is "
                                  f"{e.limit_mp:g} MP)")
            except UnsupportedImageError as e:
                return error(415, f"{e}; send JPEG, PNG, WebP, BMP or TIFF")
            except ImageReadError as e:
                return error(400, f"{e}")
            del data
            try:
                with lock:  # one forward pass at a time: the model and its buffers are shared
                    ab = colorizer.ab_for([img], temperature=temperature)
            except ValueError as e:  # e.g. a temperature that an ONNX export cannot change
                return error(400, str(e))
            try:
                data = encode_image(recombine_image(img, ab[0], bgr=True), suffix, bgr=True)
            except ValueError:
                return error(500, "could not encode the result")
            del img
        stem = Path(upload.filename or "image").stem[:80] or "image"
        return send_file(io.BytesIO(data), mimetype=mime, download_name=f"{stem}_colorized{suffix}")

    return app


def serve(colorizer: Colorizer, host: str = "127.0.0.1", port: int = 8000, threads: int = 4,
          max_megapixels: float = LIMITS["web_megapixels"], max_concurrent: int = LIMITS["web_concurrent"]) -> None:
    """Run the app under waitress (a production WSGI server) until interrupted."""
    from waitress import serve as waitress_serve

    print(f"serving the colourizer on http://{host}:{port}/ (model {colorizer.name}, {colorizer.device}; "
          f"images up to {max_megapixels:g} MP, {max_concurrent} at a time)", flush=True)
    waitress_serve(create_app(colorizer, max_megapixels=max_megapixels, max_concurrent=max_concurrent),
                   host=host, port=port, threads=threads)

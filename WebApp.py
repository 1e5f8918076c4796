"""The web colourizer: a Flask app (one page + a small HTTP API) over Inference.py.

Owns the HTTP surface only; decoding is LoadData.load_rgb and colourising is
Inference.Colorizer, the same code the command line uses. The model is loaded once, at
start-up; forward passes are serialised by one lock, so concurrent requests are safe.
Uploads are read in memory and never written to disk, and their file names are never
used as paths.

Routes:
    GET  /              the single page (web/index.html)
    POST /api/colorize  multipart field "image" -> image/png (or jpeg with format=jpeg),
                        optional "temperature" for classification models; errors are
                        JSON {"error": "..."} with 400 / 413 / 415
    GET  /healthz       {"status", "model_loaded", "device", "checkpoint", ...}

Usage:
    app = create_app(Colorizer.from_checkpoint("weights/colorizer.pt", torch.device("cpu")))
    python Engine.py --mode serve --port 8000      # the same app under waitress
"""
from __future__ import annotations

import io
import threading
from pathlib import Path

from flask import Flask, jsonify, request, send_file
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from Inference import Colorizer, encode_image
from LoadData import ImageReadError, ImageTooLargeError, UnsupportedImageError, load_rgb

WEB_DIR = Path(__file__).resolve().parent / "web"
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
OUTPUT_TYPES = {"png": ("image/png", ".png"), "jpeg": ("image/jpeg", ".jpg"), "jpg": ("image/jpeg", ".jpg")}


def error(status: int, message: str):
    """A JSON error response: {"error": message} with ``status``."""
    response = jsonify(error=message)
    response.status_code = status
    return response


def create_app(colorizer: Colorizer, max_upload_mb: float = 20, max_megapixels: float = 40) -> Flask:
    """Build the Flask app around an already loaded ``colorizer`` (shared by all requests)."""
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 2 ** 20)
    max_pixels = int(max_megapixels * 1e6)
    lock = threading.Lock()
    page = (WEB_DIR / "index.html").read_text(encoding="utf-8")
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
        try:
            rgb = load_rgb(io.BytesIO(data), name="upload", max_pixels=max_pixels, formats=ACCEPTED_FORMATS)
        except ImageTooLargeError as e:
            return error(413, f"{e}")
        except UnsupportedImageError as e:
            return error(415, f"{e}; send JPEG, PNG, WebP, BMP or TIFF")
        except ImageReadError as e:
            return error(400, f"{e}")
        with lock:  # one forward pass at a time: the model and its buffers are shared
            out = colorizer.colorize([rgb], temperature=temperature)[0]
        mime, suffix = OUTPUT_TYPES[fmt]
        try:
            data = encode_image(out, suffix)
        except ValueError:
            return error(500, "could not encode the result")
        stem = Path(upload.filename or "image").stem[:80] or "image"
        return send_file(io.BytesIO(data), mimetype=mime, download_name=f"{stem}_colorized{suffix}")

    return app


def serve(colorizer: Colorizer, host: str = "127.0.0.1", port: int = 8000, threads: int = 4) -> None:
    """Run the app under waitress (a production WSGI server) until interrupted."""
    from waitress import serve as waitress_serve

    print(f"serving the colourizer on http://{host}:{port}/ (model {colorizer.name}, {colorizer.device})", flush=True)
    waitress_serve(create_app(colorizer), host=host, port=port, threads=threads)

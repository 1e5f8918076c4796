"""What the web app reads from a request: the uploaded photo, colour points and reference photo, and its errors.

Owns ``Refused`` (an error answer: a status and one line naming the field), ``error`` (the JSON error
response), ``InMemoryRequest`` (uploads parsed in memory, never spooled to disk), ``decode_part`` (a file part ->
pixels under the server's pixel limit) and the guided model's form fields: ``upload_points`` ("hints", the
--hints JSON), ``upload_reference`` ("reference", reduced to its colour distribution at once) and
``photo_guidance`` (both checked against a decoded photo). Shared by WebApp.py's /api/colorize and
WebSessions.py's session routes; used inside a Flask request.

Usage:
    points, reference = upload_points(colorizer), upload_reference(colorizer, max_pixels)
    img = decode_part(request.files["image"], "upload", max_pixels, unreadable=400)
    guidance = photo_guidance(points, reference, img.shape[1], img.shape[0])
"""
from __future__ import annotations

import io

import numpy as np
from flask import Request, jsonify, request

from Hints import Guidance, HintError, Point, no_hints_error, shrink_reference
from ImageIO import ImageReadError, ImageTooLargeError, UnsupportedImageError, load_image
from Inference import Colorizer

# MPO: the multi-picture JPEGs of many cameras; MPO and GIF give their first frame.
ACCEPTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF")
OUTPUT_TYPES = {"png": ("image/png", ".png"), "jpeg": ("image/jpeg", ".jpg"), "jpg": ("image/jpeg", ".jpg"),
                "webp": ("image/webp", ".webp")}


class Refused(Exception):
    """A request answered with an error: ``status`` and a one-line ``message`` that names the field."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class InMemoryRequest(Request):
    """Uploads parsed into memory: Werkzeug's default spools file parts over 500 kB to a temporary file."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def error(status: int, message: str, headers: dict | None = None):
    """A JSON error response: {"error": message} with ``status``."""
    response = jsonify(error=message)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def output_type(fmt: str) -> tuple[str, str]:
    """A requested output format ("png", "jpeg", "jpg", "webp") -> (mime type, suffix); Refused (400) otherwise."""
    if fmt not in OUTPUT_TYPES:
        raise Refused(400, f"format must be png, jpeg, jpg or webp, not {fmt!r}")
    return OUTPUT_TYPES[fmt]


def decode_part(part, name: str, max_pixels: int, unreadable: int) -> np.ndarray:
    """An uploaded file part -> its pixels (ImageIO.load_image); its bytes are dropped once decoded. Raises
    Refused: 413 over the pixel limit, 415 for a format not accepted, ``unreadable`` for bytes that do not decode."""
    part.stream.seek(0)
    try:
        return load_image(part.stream, name=name, max_pixels=max_pixels, formats=ACCEPTED_FORMATS)
    except ImageTooLargeError as e:
        raise Refused(413, f"{name}: image too large ({e.megapixels:.1f} MP; this server's limit is "
                           f"{e.limit_mp:g} MP)") from None
    except UnsupportedImageError as e:
        raise Refused(415, f"{e}; send JPEG, PNG, WebP, BMP, TIFF or GIF") from None
    except ImageReadError as e:  # bytes that are no image: 400 for the photo (as ever), 415 for a reference
        advice = "; send JPEG, PNG, WebP, BMP, TIFF or GIF" if unreadable == 415 else ""
        raise Refused(unreadable, f"{e}{advice}") from None
    finally:
        part.stream.close()


def hints_text() -> str | bytes | None:
    """The request's "hints" JSON: a file part (curl -F hints=@photo.json, the page) or a text field
    (up to Flask's form-field limit); None when absent or empty (a form's untouched field)."""
    part = request.files.get("hints")
    if part is not None:
        data = part.stream.read()
        part.stream.close()
        return data if data.strip() else None
    text = request.form.get("hints")
    return text if text and text.strip() else None


def upload_guidance(colorizer: Colorizer, max_pixels: int) -> tuple[list[Point], np.ndarray | None]:
    """The request's optional "hints" and "reference" -> (points, in input pixels, not yet checked against
    the photo; the reference's global hint (Q + 1,) or None). Raises Refused (400 / 413 / 415)."""
    return upload_points(colorizer), upload_reference(colorizer, max_pixels)


def upload_points(colorizer: Colorizer) -> list[Point]:
    """The request's optional "hints" JSON -> its points ([] without), not yet checked against the photo.
    Raises Refused (400) for bad JSON, or for hints given to a model that takes none."""
    text = hints_text()
    if text is None:
        return []
    if not colorizer.guided:
        raise Refused(400, str(no_hints_error("hints")))
    from Hints import parse_hints  # the --hints file format, shared with the command line

    try:
        return parse_hints(text, "hints")
    except HintError as e:
        raise Refused(400, str(e)) from None


def upload_reference(colorizer: Colorizer, max_pixels: int) -> np.ndarray | None:
    """The request's optional "reference" file part -> its global hint (Q + 1,), or None without one. The photo
    is decoded, reduced to its colour distribution (Colorizer.reference_hint) and dropped here, so it adds no
    second image to the server's memory. Raises Refused (400 / 413 / 415)."""
    part = request.files.get("reference")
    if part is None or (not part.filename and part.stream.seek(0, io.SEEK_END) == 0):
        return None  # absent, or a form's file input left empty
    if not colorizer.guided:
        raise Refused(400, str(no_hints_error("reference")))
    if part.stream.seek(0, io.SEEK_END) == 0:
        raise Refused(400, "reference: the uploaded file is empty")
    # shrunk as reference_hint would, here so that the full-size pixels are dropped before it runs
    img = shrink_reference(decode_part(part, "reference", max_pixels, unreadable=415), colorizer.cfg.image_size)
    try:
        return colorizer.reference_hint(img, "reference")
    except HintError as e:  # a grey reference: it has no colour to give
        raise Refused(400, str(e)) from None


def photo_guidance(points: list[Point], reference: np.ndarray | None, width: int, height: int
                   ) -> list[Guidance] | None:
    """Points and a reference hint for a decoded photo of width x height -> ``ab_for``'s guidance, or None
    without either. Raises Refused (400) for a point outside the photo."""
    if not points and reference is None:
        return None
    if points:
        from Hints import check_points

        try:
            check_points(points, width, height, "hints")
        except HintError as e:
            raise Refused(400, str(e)) from None
    return [Guidance(points=tuple(points), reference=reference)]

"""Editing sessions of the web page: a photo uploaded once, then colourised again as its points change.

Owns ``SessionStore`` (the decoded photos kept between requests: bounded in entries and in bytes, least recently
used dropped first, each expiring ``ttl_s`` after its last use) and ``add_session_routes``, the session API:

    POST   /api/session                  "image" (+ optional "reference") -> {"session", "width", "height", ...}
    POST   /api/session/<id>/colorize    optional "hints" (the --hints JSON), "format" -> the image, full size
    POST   /api/session/<id>/suggest     "x", "y" (input pixels), optional "hints" -> {"swatches": [...]}
    POST   /api/session/<id>/confidence  optional "hints" -> a grey PNG: bright where the model is least sure
    POST   /api/session/<id>/reference   "reference" (a colour photo) -> {"reference": true}
    DELETE /api/session/<id>/reference   -> {"reference": false}
    DELETE /api/session/<id>             -> {"deleted": true}

A re-colourisation skips the upload and the decoding: the session keeps the decoded photo (its bytes count
towards the store's budget) and the reference's colour distribution (a few hundred numbers). The network at
the working size and the full-resolution recombination run again, as /api/colorize runs them (0.25 s median for
1 MP on two cores; benchmarks/web_sessions.py). The same admission turns, forward-pass lock, limits and
one-line JSON errors as /api/colorize apply; an unknown or expired session is a 404 that says so.

Usage:
    store = SessionStore(max_entries=24, max_bytes=400 * 2 ** 20, ttl_s=1800)
    add_session_routes(app, colorizer, lock, admission, store, max_pixels)
"""
from __future__ import annotations

import io
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flask import Flask, jsonify, request, send_file

from FullResolution import recombine_image
from Hints import Guidance
from Inference import Colorizer, confidence_image
from Pictures import encode_image
from Suggestions import lightness_at, suggest_colours
from WebServer import TRIM_AFTER_PIXELS, release_memory
from WebUploads import (OUTPUT_TYPES, Refused, decode_part, error, photo_guidance, upload_points,
                        upload_reference)

CONFIDENCE_SIDE = 1024  # the confidence overlay's longer side at most: the page scales it to the photo
GONE_REMEMBERED = 4096  # dropped ids remembered, to tell "expired" or "deleted" from "unknown" in the 404


@dataclass
class Session:
    """One photo being edited: its decoded pixels (as ImageIO.load_image gives them), name and reference hint."""

    image: np.ndarray
    name: str
    reference: np.ndarray | None = None
    used: float = field(default_factory=time.monotonic)

    @property
    def nbytes(self) -> int:
        return int(self.image.nbytes) + (0 if self.reference is None else int(self.reference.nbytes))


class SessionStore:
    """Sessions by id, at most ``max_entries`` and ``max_bytes`` of photos; each expires ``ttl_s`` after its last
    use. Adding one past a bound drops the least recently used first. Thread-safe."""

    def __init__(self, max_entries: int, max_bytes: int, ttl_s: float):
        self.max_entries, self.max_bytes, self.ttl_s = int(max_entries), int(max_bytes), float(ttl_s)
        self.sessions: OrderedDict[str, Session] = OrderedDict()  # least recently used first
        self.gone: OrderedDict[str, str] = OrderedDict()  # ids dropped lately -> why, to say so rather than "unknown"
        self.lock = threading.Lock()

    def _expire(self, now: float) -> None:
        while self.sessions:
            sid, s = next(iter(self.sessions.items()))
            if now - s.used < self.ttl_s:
                break
            self._drop(sid, "expired")

    def _drop(self, sid: str, why: str) -> None:
        del self.sessions[sid]
        self.gone[sid] = why
        while len(self.gone) > GONE_REMEMBERED:
            self.gone.popitem(last=False)

    def bytes(self) -> int:
        """Bytes of the photos held now."""
        with self.lock:
            return sum(s.nbytes for s in self.sessions.values())

    def add(self, session: Session) -> str:
        """Keep ``session`` -> its new id (URL-safe, unguessable). Raises Refused (413) for a photo over the whole
        budget; otherwise drops the least recently used sessions until it fits."""
        if session.nbytes > self.max_bytes:
            raise Refused(413, f"upload: the photo needs {session.nbytes / 2 ** 20:.0f} MiB to be kept for editing, "
                               f"over this server's {self.max_bytes / 2 ** 20:.0f} MiB for sessions; colourise it "
                               "with /api/colorize instead")
        sid = secrets.token_urlsafe(12)
        with self.lock:
            self._expire(time.monotonic())
            held = sum(s.nbytes for s in self.sessions.values())
            while self.sessions and (len(self.sessions) >= self.max_entries or held + session.nbytes > self.max_bytes):
                old = next(iter(self.sessions))
                held -= self.sessions[old].nbytes
                self._drop(old, "dropped to make room for newer ones")
            self.sessions[sid] = session
        return sid

    def get(self, sid: str) -> Session:
        """The session ``sid``, now marked as used. Raises Refused (404) with why when there is none."""
        with self.lock:
            self._expire(time.monotonic())
            session = self.sessions.get(sid)
            if session is None:
                why = self.gone.get(sid, "unknown")
                raise Refused(404, f"session {sid[:32]!r}: {why} (a session lasts {self.ttl_s / 60:g} min after "
                                   "its last use); upload the photo again")
            session.used = time.monotonic()
            self.sessions.move_to_end(sid)
            return session

    def delete(self, sid: str) -> None:
        """Forget ``sid`` (Refused 404 when there is none)."""
        self.get(sid)
        with self.lock:
            if sid in self.sessions:
                self._drop(sid, "deleted")


def session_guidance(colorizer: Colorizer, session: Session) -> list[Guidance] | None:
    """The request's "hints" with the session's reference, checked against its photo (Refused 400 for bad ones)."""
    h, w = session.image.shape[:2]
    return photo_guidance(upload_points(colorizer), session.reference, w, h)


def stretched(entropy: np.ndarray) -> np.ndarray:
    """A normalised entropy map (1, h, w) in [0, 1] -> the same stretched to its own 2nd-98th percentiles and
    squared, in [0, 1]: the model is unsure over most of a photo (0.4-0.8), so the overlay lights up only where it
    is least sure, where a point helps most."""
    lo, hi = np.percentile(entropy, (2, 98))
    if hi - lo < 1e-3:  # nearly all alike (a sure spot under 2 % of the photo at most): stretch from the least
        lo = float(entropy.min())
    return np.clip((entropy - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0) ** 2


def coordinate(name: str, limit: int) -> float:
    """Form field ``name`` as a pixel coordinate in [0, limit) (Refused 400 otherwise)."""
    text = request.form.get(name) or request.args.get(name) or ""
    try:
        value = float(text)
        if not 0 <= value < limit:
            raise ValueError
    except ValueError:
        raise Refused(400, f"{name} must be a pixel coordinate in [0, {limit}), not {text[:20]!r}") from None
    return value


def add_session_routes(app: Flask, colorizer: Colorizer, lock: threading.Lock, admission, store: SessionStore,
                       max_pixels: int) -> None:
    """Register the session API on ``app`` (see the module docstring). ``lock`` serialises forward passes and
    ``admission`` (WebApp.Admission) bounds the requests in work, as for /api/colorize."""

    @app.errorhandler(Refused)
    def refused(e: Refused):
        return error(e.status, e.message)

    def guided_only() -> None:
        if not colorizer.guided:
            raise Refused(400, f"{colorizer.name}: this model takes no colour points; editing sessions need the "
                               "guided release, weights/colorizer.onnx")

    @app.post("/api/session")
    def open_session():
        guided_only()
        upload = request.files.get("image")
        if upload is None:
            raise Refused(400, 'no image: send the photo as multipart form field "image"')
        with admission.turn():
            if upload.stream.seek(0, io.SEEK_END) == 0:
                raise Refused(400, "the uploaded file is empty")
            reference = upload_reference(colorizer, max_pixels)
            img = decode_part(upload, "upload", max_pixels, unreadable=400)
        session = Session(img, (upload.filename or "image")[:80], reference)
        sid = store.add(session)
        return jsonify(session=sid, width=img.shape[1], height=img.shape[0], reference=reference is not None,
                       expires_s=store.ttl_s, name=session.name)

    @app.post("/api/session/<sid>/colorize")
    def session_colorize(sid: str):
        session = store.get(sid)
        fmt = (request.form.get("format") or request.args.get("format") or "png").lower()
        if fmt not in OUTPUT_TYPES:
            raise Refused(400, f"format must be png, jpeg, jpg or webp, not {fmt!r}")
        with admission.turn():  # the hints are parsed inside it too: up to 10 000 points take about a second
            guidance = session_guidance(colorizer, session)
            with lock:
                ab = colorizer.ab_for([session.image], guidance=guidance)
            mime, suffix = OUTPUT_TYPES[fmt]
            data = encode_image(recombine_image(session.image, np.asarray(ab[0]), bgr=True), suffix, bgr=True)
        if session.image.shape[0] * session.image.shape[1] > TRIM_AFTER_PIXELS:
            release_memory()
        stem = Path(session.name).stem[:80] or "image"
        return send_file(io.BytesIO(data), mimetype=mime, download_name=f"{stem}_colorized{suffix}")

    @app.post("/api/session/<sid>/suggest")
    def session_suggest(sid: str):
        session = store.get(sid)
        h, w = session.image.shape[:2]
        x, y = coordinate("x", w), coordinate("y", h)
        with admission.turn():
            guidance = session_guidance(colorizer, session)
            with lock:
                try:
                    probs = colorizer.distribution([session.image], guidance)[0]
                except ValueError as e:  # e.g. an export from before the distribution was an output
                    raise Refused(400, str(e)) from None
        swatches = suggest_colours(probs, colorizer.bins, x, y, w, h, lightness_at(session.image, x, y))
        return jsonify(x=x, y=y, swatches=swatches)

    @app.post("/api/session/<sid>/confidence")
    def session_confidence(sid: str):
        session = store.get(sid)
        h, w = session.image.shape[:2]
        scale = min(1.0, CONFIDENCE_SIDE / max(h, w))
        with admission.turn():
            guidance = session_guidance(colorizer, session)
            with lock:
                _, entropy = colorizer.ab_for([session.image], guidance=guidance, entropy=True)
        if entropy is None:
            raise Refused(400, f"{colorizer.name}: this model gives no confidence map")
        grey = confidence_image(stretched(entropy[0]), max(1, round(h * scale)), max(1, round(w * scale)))
        data = encode_image(grey, ".png", bgr=True)  # one channel: OpenCV writes a grey PNG
        return send_file(io.BytesIO(data), mimetype="image/png", download_name="confidence.png")

    @app.post("/api/session/<sid>/reference")
    def session_reference(sid: str):
        session = store.get(sid)
        with admission.turn():
            reference = upload_reference(colorizer, max_pixels)
        if reference is None:
            raise Refused(400, 'reference: no file; send the colour photo as multipart form field "reference"')
        session.reference = reference
        return jsonify(reference=True)

    @app.delete("/api/session/<sid>/reference")
    def session_clear_reference(sid: str):
        store.get(sid).reference = None
        return jsonify(reference=False)

    @app.delete("/api/session/<sid>")
    def session_delete(sid: str):
        store.delete(sid)
        return jsonify(deleted=True)

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
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, jsonify, request, send_file

from FullResolution import recombine_image
from Hints import Guidance
from Inference import Colorizer, confidence_image
from Pictures import encode_image
from Suggestions import lightness_at, suggest_colours
from WebServer import TRIM_AFTER_PIXELS, release_memory
from WebUploads import Refused, decode_part, output_type, photo_guidance, upload_points, upload_reference

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


@dataclass
class Sessions:
    """What the session views share: the model, the forward-pass lock, the admission turns (WebApp.Admission),
    the store and the pixel limit."""

    colorizer: Colorizer
    lock: threading.Lock
    admission: Any
    store: SessionStore
    max_pixels: int


def add_session_routes(app: Flask, colorizer: Colorizer, lock: threading.Lock, admission: Any, store: SessionStore,
                       max_pixels: int) -> None:
    """Register the session API on ``app`` (see the module docstring). ``lock`` serialises forward passes and
    ``admission`` (WebApp.Admission) bounds the requests in work, as for /api/colorize."""
    ctx = Sessions(colorizer, lock, admission, store, max_pixels)
    for rule, method, view in (("/api/session", "POST", open_session),
                               ("/api/session/<sid>/colorize", "POST", session_colorize),
                               ("/api/session/<sid>/suggest", "POST", session_suggest),
                               ("/api/session/<sid>/confidence", "POST", session_confidence),
                               ("/api/session/<sid>/reference", "POST", session_reference),
                               ("/api/session/<sid>/reference", "DELETE", session_clear_reference),
                               ("/api/session/<sid>", "DELETE", session_delete)):
        app.add_url_rule(rule, view.__name__, partial(view, ctx), methods=[method])


def open_session(ctx: Sessions):
    """POST /api/session: decode the upload (and reduce a reference) inside a turn, keep it -> its id and size."""
    if not ctx.colorizer.guided:
        raise Refused(400, f"{ctx.colorizer.name}: this model takes no colour points; editing sessions need the "
                           "guided release, weights/colorizer.onnx")
    upload = request.files.get("image")
    if upload is None:
        raise Refused(400, 'no image: send the photo as multipart form field "image"')
    with ctx.admission.turn():
        if upload.stream.seek(0, io.SEEK_END) == 0:
            raise Refused(400, "the uploaded file is empty")
        reference = upload_reference(ctx.colorizer, ctx.max_pixels)
        img = decode_part(upload, "upload", ctx.max_pixels, unreadable=400)
    session = Session(img, (upload.filename or "image")[:80], reference)
    sid = ctx.store.add(session)
    return jsonify(session=sid, width=img.shape[1], height=img.shape[0], reference=reference is not None,
                   expires_s=ctx.store.ttl_s, name=session.name)


def session_colorize(ctx: Sessions, sid: str):
    """POST /api/session/<sid>/colorize: the kept photo with the request's points -> the image at full size."""
    session = ctx.store.get(sid)
    mime, suffix = output_type((request.form.get("format") or request.args.get("format") or "png").lower())
    with ctx.admission.turn():  # the hints are parsed inside it too: up to 10 000 points take about a second
        guidance = session_guidance(ctx.colorizer, session)
        with ctx.lock:
            ab = ctx.colorizer.ab_for([session.image], guidance=guidance)
        data = encode_image(recombine_image(session.image, np.asarray(ab[0]), bgr=True), suffix, bgr=True)
    if session.image.shape[0] * session.image.shape[1] > TRIM_AFTER_PIXELS:
        release_memory()
    stem = Path(session.name).stem[:80] or "image"
    return send_file(io.BytesIO(data), mimetype=mime, download_name=f"{stem}_colorized{suffix}")


def session_suggest(ctx: Sessions, sid: str):
    """POST /api/session/<sid>/suggest: x, y and the other points -> the suggested colours there."""
    session = ctx.store.get(sid)
    h, w = session.image.shape[:2]
    x, y = coordinate("x", w), coordinate("y", h)
    with ctx.admission.turn():
        guidance = session_guidance(ctx.colorizer, session)
        with ctx.lock:
            try:
                probs = ctx.colorizer.distribution([session.image], guidance)[0]
            except ValueError as e:  # e.g. an export from before the distribution was an output
                raise Refused(400, str(e)) from None
    swatches = suggest_colours(probs, ctx.colorizer.bins, x, y, w, h, lightness_at(session.image, x, y))
    return jsonify(x=x, y=y, swatches=swatches)


def session_confidence(ctx: Sessions, sid: str):
    """POST /api/session/<sid>/confidence: the points -> the stretched uncertainty map, a grey PNG."""
    session = ctx.store.get(sid)
    h, w = session.image.shape[:2]
    scale = min(1.0, CONFIDENCE_SIDE / max(h, w))
    with ctx.admission.turn():
        guidance = session_guidance(ctx.colorizer, session)
        with ctx.lock:
            _, entropy = ctx.colorizer.ab_for([session.image], guidance=guidance, entropy=True)
    if entropy is None:
        raise Refused(400, f"{ctx.colorizer.name}: this model gives no confidence map")
    grey = confidence_image(stretched(entropy[0]), max(1, round(h * scale)), max(1, round(w * scale)))
    data = encode_image(grey, ".png", bgr=True)  # one channel: OpenCV writes a grey PNG
    return send_file(io.BytesIO(data), mimetype="image/png", download_name="confidence.png")


def session_reference(ctx: Sessions, sid: str):
    """POST /api/session/<sid>/reference: a colour photo -> kept as its colour distribution."""
    session = ctx.store.get(sid)
    with ctx.admission.turn():
        reference = upload_reference(ctx.colorizer, ctx.max_pixels)
    if reference is None:
        raise Refused(400, 'reference: no file; send the colour photo as multipart form field "reference"')
    session.reference = reference
    return jsonify(reference=True)


def session_clear_reference(ctx: Sessions, sid: str):
    """DELETE /api/session/<sid>/reference."""
    ctx.store.get(sid).reference = None
    return jsonify(reference=False)


def session_delete(ctx: Sessions, sid: str):
    """DELETE /api/session/<sid>."""
    ctx.store.delete(sid)
    return jsonify(deleted=True)

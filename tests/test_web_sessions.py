"""The web page's editing sessions (issue 21): a photo uploaded once, colourised again with new points, with
suggested colours at a point, a confidence map and a reference that can be set and cleared; the store's bounds
(entries, bytes, expiry) and the 404s of unknown and expired sessions. Suggestions.py's mode finding on its own.

Most tests use ``fake_guided`` (its colour is exactly its hints; its distribution puts 0.6 on that colour and 0.3
on a green), so they need no trained model; one repeats the suggestion check with the shipped model.
"""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from guided_helpers import BINS, FAKE_SECOND, fake_guided, hint_json, shipped_guided

pytest.importorskip("flask", reason="Flask is not installed (pip install -r requirements.txt)")
import Suggestions  # noqa: E402
from WebApp import create_app  # noqa: E402
from WebSessions import Session, SessionStore  # noqa: E402
from test_web_hints import BLUE, GREY, H, POINT, W, a_near, lab  # noqa: E402


@pytest.fixture
def client():
    return create_app(fake_guided()).test_client()


def open_session(client, image: bytes = GREY, **parts) -> str:
    data = {"image": (io.BytesIO(image), "photo.png")}
    data.update({k: (io.BytesIO(v), f"{k}.png") for k, v in parts.items()})
    r = client.post("/api/session", data=data, content_type="multipart/form-data")
    assert r.status_code == 200, r.json
    assert (r.json["width"], r.json["height"]) == (W, H)
    return r.json["session"]


def recolour(client, sid: str, hints: str | None = None, **form):
    data = dict(form) if hints is None else {"hints": hints, **form}
    return client.post(f"/api/session/{sid}/colorize", data=data, content_type="multipart/form-data")


def test_a_session_is_colourised_again_with_new_points(client):
    sid = open_session(client)
    plain, hinted = recolour(client, sid), recolour(client, sid, hint_json(POINT))
    assert plain.status_code == 200 and hinted.status_code == 200, hinted.json
    assert Image.open(io.BytesIO(hinted.data)).size == (W, H)  # full size
    assert a_near(hinted.data, 40, 30) > a_near(plain.data, 40, 30) + 15  # red at the point
    assert np.abs(lab(hinted.data)[80:, 100:] - lab(plain.data)[80:, 100:]).max() < 0.5  # unchanged far away
    moved = recolour(client, sid, hint_json({**POINT, "x": 120, "y": 90}))
    assert a_near(moved.data, 120, 90) > a_near(plain.data, 120, 90) + 15 and a_near(moved.data, 40, 30) < 5
    assert recolour(client, sid, format="jpeg").mimetype == "image/jpeg"


def test_suggestions_are_the_models_likely_colours_at_the_point(client):
    sid = open_session(client)
    r = client.post(f"/api/session/{sid}/suggest", data={"x": "40", "y": "30"})
    assert r.status_code == 200, r.json
    swatches = r.json["swatches"]
    # the fake's own colour there (grey: no hint) first with 0.6, then its green with 0.3
    assert [round(s["p"], 1) for s in swatches[:2]] == [0.6, 0.3], swatches
    assert abs(swatches[0]["ab"][0]) < 6 and abs(swatches[0]["ab"][1]) < 6
    assert np.allclose(swatches[1]["ab"], FAKE_SECOND, atol=6)
    rgb = [int(swatches[1]["color"][i:i + 2], 16) for i in (1, 3, 5)]
    assert rgb[1] > rgb[0] and rgb[1] > rgb[2]  # shown green
    # given the points already placed: with a red point there, red comes first
    r = client.post(f"/api/session/{sid}/suggest", data={"x": "40", "y": "30", "hints": hint_json(POINT)})
    first = r.json["swatches"][0]
    assert first["ab"][0] > 40 and int(first["color"][1:3], 16) > int(first["color"][3:5], 16)


def test_confidence_map_and_reference_set_and_cleared(client):
    sid = open_session(client)
    r = client.post(f"/api/session/{sid}/confidence")
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert Image.open(io.BytesIO(r.data)).size == (W, H)
    # given a point, the model is sure there (the fake: 0.99 on the hint's colour): dark at it, bright elsewhere
    r = client.post(f"/api/session/{sid}/confidence", data={"hints": hint_json(POINT)})
    unsure = np.asarray(Image.open(io.BytesIO(r.data)).convert("L")).astype(float)
    assert unsure[27:33, 37:43].mean() < 60 and unsure[80:, 100:].mean() > 200, (unsure[30, 40], unsure[100, 140])
    plain = recolour(client, sid)
    r = client.post(f"/api/session/{sid}/reference", data={"reference": (io.BytesIO(BLUE), "blue.png")},
                    content_type="multipart/form-data")
    assert r.status_code == 200 and r.json == {"reference": True}
    blue = recolour(client, sid)
    assert lab(blue.data)[..., 2].mean() < lab(plain.data)[..., 2].mean() - 10
    assert client.delete(f"/api/session/{sid}/reference").json == {"reference": False}
    assert np.abs(lab(recolour(client, sid).data) - lab(plain.data)).max() < 0.5


@pytest.mark.parametrize("path, data, words", [
    ("colorize", {"hints": "{not json"}, "hints"),
    ("colorize", {"hints": hint_json({**POINT, "x": W + 5})}, "outside"),
    ("colorize", {"format": "gif"}, "format"),
    ("suggest", {"x": "-1", "y": "3"}, "x must be"),
    ("suggest", {"x": "3"}, "y must be"),
    ("reference", {}, "reference"),
])
def test_bad_session_requests_get_400_and_one_line(client, path, data, words):
    sid = open_session(client)
    r = client.post(f"/api/session/{sid}/{path}", data=data, content_type="multipart/form-data")
    assert r.status_code == 400 and words in r.json["error"] and "\n" not in r.json["error"], r.json


def test_unknown_and_expired_sessions_are_404_with_the_reason():
    store = SessionStore(max_entries=2, max_bytes=10 ** 9, ttl_s=0.3)
    client = create_app(fake_guided(), sessions=store).test_client()
    r = recolour(client, "no-such-session")
    assert r.status_code == 404 and "unknown" in r.json["error"] and "expired" not in r.json["error"]
    sid = open_session(client)
    time.sleep(0.5)
    r = client.post(f"/api/session/{sid}/suggest", data={"x": "1", "y": "1"})
    assert r.status_code == 404 and "expired" in r.json["error"] and "upload the photo again" in r.json["error"]
    assert "unknown" not in r.json["error"]
    sid = open_session(client)
    assert client.delete(f"/api/session/{sid}").json == {"deleted": True}
    r = recolour(client, sid)
    assert r.status_code == 404 and "deleted" in r.json["error"] and "expired" not in r.json["error"]


def test_the_store_is_bounded_in_entries_and_bytes_least_recently_used_first():
    img = np.zeros((100, 100), np.uint8)  # 10 000 bytes
    store = SessionStore(max_entries=3, max_bytes=25_000, ttl_s=60)
    a, b = store.add(Session(img, "a")), store.add(Session(img, "b"))
    store.get(a)  # a is now the most recently used
    c = store.add(Session(img, "c"))  # 30 000 bytes would be over: b goes
    assert set(store.sessions) == {a, c} and store.bytes() == 20_000
    with pytest.raises(Exception, match="dropped to make room"):
        store.get(b)
    store = SessionStore(max_entries=2, max_bytes=10 ** 9, ttl_s=60)
    ids = [store.add(Session(img, str(i))) for i in range(5)]
    assert list(store.sessions) == ids[-2:]
    with pytest.raises(Exception, match="MiB"):  # one photo over the whole budget is refused, nothing dropped
        SessionStore(max_entries=2, max_bytes=5_000, ttl_s=60).add(Session(img, "big"))


def test_modes_are_greedy_families_most_likely_first():
    bins = np.array([(a, b) for a in range(-20, 21, 10) for b in range(-20, 21, 10)], np.float64)
    p = np.zeros(len(bins))
    at = {tuple(v): i for i, v in enumerate(bins)}
    p[at[(-20, -20)]], p[at[(-10, -20)]] = 0.3, 0.1  # one family, centre (-20, -20), mean a = -17.5
    p[at[(20, 20)]] = 0.5  # another, two steps away
    p[at[(0, 20)]] = 0.1  # its neighbour-but-one: a family of its own
    found = Suggestions.modes(p, bins)
    assert [round(m[0], 3) for m in found] == [0.5, 0.4, 0.1]
    assert np.allclose(found[1][1:], (-17.5, -20))
    assert sum(m[0] for m in found) == pytest.approx(1.0)


def test_swatches_are_in_gamut_at_the_photos_lightness():
    import ColourSpace
    for L, a, b in [(50, 80, 60), (90, -100, 100), (10, 0, -100), (55, 0, 0)]:
        hexed = Suggestions.lab_to_hex(L, a, b)
        rgb = np.array([int(hexed[i:i + 2], 16) / 255 for i in (1, 3, 5)], np.float32).reshape(1, 1, 3)
        got = ColourSpace.rgb_to_lab(np.moveaxis(rgb, -1, 0), axis=0)[:, 0, 0]
        assert abs(float(got[0]) - L) < 1.5, (hexed, got)  # the lightness kept
        if a or b:  # the hue kept, the chroma shrunk at most
            assert np.dot(got[1:], (a, b)) > 0.95 * np.hypot(*got[1:]) * np.hypot(a, b)


def test_the_shipped_model_suggests_a_red_given_a_red_point():
    """With the shipped model's distribution: a red point makes red the first suggestion there."""
    colorizer = shipped_guided()
    client = create_app(colorizer).test_client()
    sid = open_session(client)
    plain = client.post(f"/api/session/{sid}/suggest", data={"x": "40", "y": "30"}).json["swatches"]
    red = client.post(f"/api/session/{sid}/suggest", data={"x": "40", "y": "30", "hints": hint_json(POINT)})
    assert red.status_code == 200, red.json
    first = red.json["swatches"][0]
    assert first["ab"][0] > 30 and first["ab"][0] > plain[0]["ab"][0] + 20, (plain, red.json)


def test_a_swatch_given_as_a_point_keeps_its_chroma_in_a_dark_place():
    """A swatch is shown at the photo's lightness, which can leave no room for colour (near black); the colour it
    gives as a point ("hint") keeps the family's chroma, so picking it is not picking grey."""
    from Hints import hex_to_ab

    probs = np.zeros((len(BINS), 4, 4), np.float32)
    probs[int(np.abs(BINS - (60, 50)).sum(-1).argmin())] = 1.0  # sure of a strong red-orange everywhere
    (swatch,) = Suggestions.suggest_colours(probs, BINS, 1, 1, 4, 4, lightness=2.0)
    shown, given = hex_to_ab(swatch["color"]), hex_to_ab(swatch["hint"])
    assert np.hypot(*shown) < 20 and np.allclose(given, (60, 50), atol=5), swatch


def test_session_work_holds_a_turn_and_a_full_queue_is_503_at_once(monkeypatch):
    """Re-colourising, suggestions and the confidence map take an admission turn like /api/colorize: with one
    turn, held, and no queue, each is refused with 503 at once instead of piling up."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    colorizer = fake_guided()
    app = create_app(colorizer, max_concurrent=1, max_queue=0)
    client = app.test_client()
    sid = open_session(client)
    inside, release, real = threading.Event(), threading.Event(), colorizer.ab_for

    def held(*args, **kwargs):
        inside.set()
        release.wait(10)
        return real(*args, **kwargs)
    monkeypatch.setattr(colorizer, "ab_for", held)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(recolour, app.test_client(), sid)
        assert inside.wait(10)
        try:
            for path, data in (("colorize", {}), ("suggest", {"x": "1", "y": "1"}), ("confidence", {})):
                t = time.perf_counter()
                r = client.post(f"/api/session/{sid}/{path}", data=data)
                assert r.status_code == 503 and time.perf_counter() - t < 2, (path, r.status_code)
        finally:
            release.set()
        assert first.result(10).status_code == 200

"""The web API's colour points and reference photo (issue 20): POST /api/colorize with "hints" (the --hints
JSON, as a file part or a text field) and "reference" (an image file part). Accepted hints change the
colour near the point; each bad input gets its status and a one-line message naming the field; the body
and pixel limits hold with a reference; a model without hints refuses them with a 400.

Most tests use ``fake_guided`` (its colour is exactly its hints), so they need no trained model; one
repeats the main check with the shipped model and skips while it is not guided.
"""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import real_photo
from guided_helpers import fake_guided, hint_json, shipped_guided

pytest.importorskip("flask", reason="Flask is not installed (pip install -r requirements.txt)")
import WebUploads  # noqa: E402
from Inference import Colorizer  # noqa: E402
from WebApp import create_app  # noqa: E402

W, H = 160, 120
POINT = {"x": 40, "y": 30, "color": "#ff0000", "radius": 6}


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


GREY = png(cv2.cvtColor(cv2.resize(real_photo("chelsea", 200), (W, H)), cv2.COLOR_RGB2GRAY))
BLUE = png(np.full((50, 70, 3), (40, 90, 200), np.uint8))


def post(client, image: bytes = GREY, hints: str | bytes | None = None, reference: bytes | None = None,
         hints_as_file: bool = True, reference_name: str = "ref.png", **form):
    data = {"image": (io.BytesIO(image), "photo.png"), **form}
    if hints is not None:
        raw = hints.encode() if isinstance(hints, str) else hints
        data["hints"] = (io.BytesIO(raw), "photo.json") if hints_as_file else raw.decode()
    if reference is not None:
        data["reference"] = (io.BytesIO(reference), reference_name)
    return client.post("/api/colorize", data=data, content_type="multipart/form-data")


def lab(data: bytes) -> np.ndarray:
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def a_near(data: bytes, x: int, y: int, r: int = 3) -> float:
    return float(lab(data)[y - r:y + r, x - r:x + r, 1].mean())


@pytest.fixture(scope="module")
def client():
    return create_app(fake_guided()).test_client()


@pytest.mark.parametrize("as_file", [True, False], ids=["file-part", "text-field"])
def test_hints_colour_the_photo_near_the_point(client, as_file):
    plain, hinted = post(client), post(client, hints=hint_json(POINT), hints_as_file=as_file)
    assert plain.status_code == 200 and hinted.status_code == 200, hinted.json
    assert Image.open(io.BytesIO(hinted.data)).size == (W, H)
    assert a_near(hinted.data, 40, 30) > a_near(plain.data, 40, 30) + 15  # red at the point
    far = lab(hinted.data)[80:, 100:], lab(plain.data)[80:, 100:]
    assert np.abs(far[0] - far[1]).max() < 0.5  # unchanged far from it
    assert np.abs(lab(hinted.data)[..., 0] - lab(plain.data)[..., 0]).max() < 1.0  # lightness is the photo's


def test_a_reference_gives_its_colours(client):
    plain, guided = post(client), post(client, reference=BLUE)
    assert guided.status_code == 200, guided.json
    assert lab(guided.data)[..., 2].mean() < lab(plain.data)[..., 2].mean() - 10  # bluer everywhere


def test_hints_and_reference_together(client):
    r = post(client, hints=hint_json(POINT), reference=BLUE)
    assert r.status_code == 200, r.json
    assert a_near(r.data, 40, 30) > 15 and lab(r.data)[80:, 100:, 2].mean() < -10


def test_empty_hints_and_an_empty_file_input_are_no_hints(client):
    """A form's untouched text field and file input (no file name, no bytes) mean no hints."""
    plain = post(client)
    r = client.post("/api/colorize", content_type="multipart/form-data",
                    data={"image": (io.BytesIO(GREY), "photo.png"), "hints": "", "reference": (io.BytesIO(b""), "")})
    assert r.status_code == 200 and r.data == plain.data


BAD = [  # (what, hints, reference, status, words the one line holds)
    ("bad JSON", '{"points": [', None, 400, ["hints"]),
    ("bad colour", hint_json({**POINT, "color": "#12zz45"}), None, 400, ["hints", "#12zz45"]),
    ("point outside", hint_json(POINT, {**POINT, "x": 500}), None, 400, ["hints", "500"]),
    ("grey reference", None, png(np.full((30, 30, 3), 128, np.uint8)), 400,
     ["reference", "no colour to give"]),
    ("reference not an image", None, b"just some text, not a photo", 415, ["reference"]),
    ("empty reference file", None, b"", 400, ["reference", "empty"]),
]


@pytest.mark.parametrize("what,hints,reference,status,words", BAD, ids=[b[0] for b in BAD])
def test_bad_hints_get_their_status_and_one_line(client, what, hints, reference, status, words):
    r = post(client, hints=hints, reference=reference)
    assert r.status_code == status, (what, r.status_code, r.data[:200])
    message = r.json["error"]
    assert "\n" not in message and message.startswith(words[0]), message
    assert all(w in message for w in words), message


def test_a_reference_in_an_unaccepted_format_is_415(client):
    buf = io.BytesIO()
    Image.fromarray(real_photo("coffee", 40)).save(buf, format="PPM")
    r = post(client, reference=buf.getvalue(), reference_name="ref.ppm")
    assert r.status_code == 415 and r.json["error"].startswith("reference") and "PPM" in r.json["error"]


def test_a_reference_over_the_pixel_limit_is_413():
    client = create_app(fake_guided(), max_megapixels=0.02).test_client()  # the photo: 0.019 MP
    big = png(np.full((200, 200, 3), (40, 90, 200), np.uint8))  # 0.04 MP
    r = post(client, reference=big)
    assert r.status_code == 413 and r.json["error"].startswith("reference: image too large")
    assert "0.02 MP" in r.json["error"]


def multipart(parts: list[tuple[str, bytes]], total: int) -> tuple[bytes, str]:
    """A multipart body of exactly ``total`` bytes holding ``parts`` (field, PNG bytes), the last one padded
    after its PNG's end (decoders ignore it)."""
    boundary = "----hints"
    chunks = [(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
               "Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n" for name, data in parts]
    tail = f"--{boundary}--\r\n".encode()
    pad = total - sum(map(len, chunks)) - len(tail)
    chunks[-1] = chunks[-1][:-2] + bytes(pad) + b"\r\n"
    return b"".join(chunks) + tail, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("extra,status", [(0, 200), (1, 413)])
def test_the_body_limit_counts_the_reference(extra, status):
    """1 MiB in all: a photo and a padded reference that fill it are served; one byte more is 413."""
    client = create_app(fake_guided(), max_upload_mb=1).test_client()
    body, ctype = multipart([("image", GREY), ("reference", BLUE)], 2 ** 20 + extra)
    r = client.post("/api/colorize", data=body, content_type=ctype)
    assert r.status_code == status, r.data[:200]
    if status == 413:
        assert "limit is 1 MiB" in r.json["error"]


@pytest.fixture(scope="module")
def unguided(tiny_checkpoint):
    return create_app(Colorizer.from_checkpoint(tiny_checkpoint)).test_client()


@pytest.mark.parametrize("field", ["hints", "reference"])
def test_an_unguided_model_refuses_hints_with_400(unguided, field):
    r = post(unguided, hints=hint_json(POINT)) if field == "hints" else post(unguided, reference=BLUE)
    assert r.status_code == 400
    message = r.json["error"]
    assert message.startswith(field) and "takes no colour points" in message and "\n" not in message
    assert post(unguided).status_code == 200  # without hints it colourises as before


def test_the_page_offers_hints_only_for_a_guided_model(client, unguided):
    page = client.get("/").get_data(as_text=True)
    assert 'id="reference"' in page and 'id="hints"' in page and '<section id="tools">' in page
    assert 'data-guided="1"' in page
    plain = unguided.get("/").get_data(as_text=True)
    assert '<section id="tools" hidden>' in plain and 'data-guided="0"' in plain
    assert "{{" not in page
    assert client.get("/healthz").json["guided"] is True and unguided.get("/healthz").json["guided"] is False


def test_the_reference_is_dropped_before_the_photo_is_decoded(monkeypatch):
    """The reference is decoded, reduced to its colour distribution and dropped before the photo is decoded:
    never two decoded images at once."""
    import gc
    import weakref

    alive, held, real = [], [], WebUploads.load_image

    def tracked(*args, **kwargs):
        gc.collect()
        held.append(sum(r() is not None for r in alive))  # decoded images still alive as this one is decoded
        img = real(*args, **kwargs)
        alive.append(weakref.ref(img))
        return img
    monkeypatch.setattr(WebUploads, "load_image", tracked)
    r = post(create_app(fake_guided()).test_client(), reference=BLUE)
    assert r.status_code == 200 and held == [0, 0], held


def test_a_large_reference_is_shrunk_before_its_colours_are_counted(monkeypatch):
    """reference_hint sees at most 4 x the working size a side (not a float copy of the whole photo), and the
    colour distribution it gives is the full photo's within 1 % of the pixels."""
    colorizer = fake_guided(size=64)
    photo = cv2.resize(real_photo("chelsea", 400), (1500, 1000), interpolation=cv2.INTER_CUBIC)
    photo = np.clip(photo + np.random.default_rng(0).normal(0, 4, photo.shape), 0, 255).astype(np.uint8)
    full = colorizer.reference_hint(photo)
    seen, real = [], colorizer.reference_hint
    monkeypatch.setattr(colorizer, "reference_hint", lambda img, name: (seen.append(img.shape), real(img, name))[1])
    got = WebUploads.shrink_reference(photo, 64)
    assert np.abs(real(got, "reference") - full).sum() < 0.02  # L1 over the distribution: 2 = all moved
    r = post(create_app(colorizer).test_client(), reference=png(photo))
    assert r.status_code == 200 and seen == [(256, 256, 3)], seen


def test_the_shipped_model_follows_a_point():
    """The same with the shipped model (skipped while it takes no hints): red near a red point."""
    client = create_app(shipped_guided()).test_client()
    plain, hinted = post(client), post(client, hints=hint_json(POINT))
    assert hinted.status_code == 200, hinted.json
    assert a_near(hinted.data, 40, 30) > a_near(plain.data, 40, 30) + 10


# ----------------------------------------------------------------------------- the page, in a real browser

# images laid out (visible) without a decoded picture: Chromium draws those as a broken-image icon
BROKEN_IMAGES = "Array.from(document.images).filter(i => i.offsetWidth > 0 && !(i.complete && i.naturalWidth)).length"


def shown_lab(page, x: int, y: int, r: int = 3) -> np.ndarray:
    """Mean Lab (L, a, b) around (x, y) of the result image the page shows (read back through a canvas)."""
    rgba = page.evaluate("""([x, y, r]) => {
        const img = document.getElementById("result-img"), c = document.createElement("canvas");
        c.width = img.naturalWidth; c.height = img.naturalHeight;
        const g = c.getContext("2d"); g.drawImage(img, 0, 0);
        return Array.from(g.getImageData(x - r, y - r, 2 * r, 2 * r).data); }""", [x, y, r])
    rgb = np.array(rgba, np.uint8).reshape(2 * r, 2 * r, 4)[..., :3]
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab).reshape(-1, 3).mean(0)


def test_the_page_sends_the_reference_and_hints_files(tmp_path):
    """Headless Chromium on a real server (fake guided model): the hints file chosen in the page reddens the
    photo at its point, a reference chosen next makes the rest blue; a bad hints file is shown as the server's
    line about the hints, not as a bad photo. No broken-image icons before an upload."""
    from test_web import chromium, csp_refusals, served

    photo, good, bad = tmp_path / "photo.png", tmp_path / "points.json", tmp_path / "bad.json"
    reference = tmp_path / "blue.png"
    photo.write_bytes(GREY)
    reference.write_bytes(BLUE)
    good.write_text(hint_json(POINT))
    bad.write_text(hint_json({**POINT, "color": "#12zz45"}))
    with served(fake_guided()) as url, chromium() as browser:
        page = browser.new_page()
        refused = csp_refusals(page)
        page.goto(url)
        assert page.evaluate(BROKEN_IMAGES) == 0  # nothing shown as a broken image before an upload
        page.set_input_files("#hints", str(good))
        with page.expect_response("**/colorize") as answer:
            page.set_input_files("#file", str(photo))
        page.wait_for_selector("#status:text-matches('^Done')", timeout=30000)
        assert answer.value.status == 200
        assert shown_lab(page, 40, 30)[1] > 15  # the result shown is red at the point
        with page.expect_response("**/colorize") as answer:  # a reference added: colourised again
            page.set_input_files("#reference", str(reference))
        page.wait_for_selector("#status:text-matches('^Done')", timeout=30000)
        assert answer.value.status == 200
        assert shown_lab(page, 40, 30)[1] > 15 and shown_lab(page, 120, 90)[2] < -10  # red point, blue rest
        with page.expect_response("**/colorize") as answer:  # the reference cleared
            page.click("#clear-reference")
        page.wait_for_selector("#status:text-matches('^Done')", timeout=30000)
        assert abs(shown_lab(page, 120, 90)[2]) < 2 and shown_lab(page, 40, 30)[1] > 15
        with page.expect_response("**/colorize") as answer:  # a reference chosen before a new photo goes with it
            page.set_input_files("#reference", str(reference))
        with page.expect_response("**/colorize") as answer:
            page.set_input_files("#file", str(photo))
        page.wait_for_selector("#status:text-matches('^Done')", timeout=30000)
        assert shown_lab(page, 120, 90)[2] < -10
        with page.expect_response("**/colorize") as answer:  # a new hints file: colourised again
            page.set_input_files("#hints", str(bad))
        page.wait_for_selector("#status.error", timeout=30000)
        status = page.text_content("#status")
        assert answer.value.status == 400 and status.startswith("hints") and "#12zz45" in status, status
    assert refused == []

"""The editing page's speed and the server's memory with sessions open (a script that prints figures, not a test).

Starts ``Engine.py --mode serve`` on a free loopback port with the shipped model and
  1. opens one session on a 1 MP grey photo and colourises it again ``--repeats`` times, each time with a point
     moved (what the page does after a change), timing each request end to end at the client (HTTP, the
     network, recombination, PNG encoding and transfer); the same for suggested colours at a point, and, in the
     same run, for a one-shot POST /api/colorize of the same photo with the same point (upload and decoding
     included), so the ratio is measured under the same load;
  2. opens ``--sessions`` sessions of 1 MP (colouring each once) and prints the server's RSS, then
     ``--big`` more of ``--big-megapixels`` each, past the store's limits (24 sessions, 400 MiB by default), to
     show that the RSS levels off.

Usage:
    python benchmarks/web_sessions.py [--repeats 15] [--sessions 20] [--big 40] [--big-megapixels 12] [--big-colour]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_web import rss_kib, start_server  # noqa: E402
from synthetic import ROOT, grey_png  # noqa: E402


def form(fields: dict[str, bytes | str]) -> tuple[bytes, str]:
    """A multipart body: bytes values as file parts, str values as text fields."""
    boundary, body = "----colorizer-sessions", b""
    for name, value in fields.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
        if isinstance(value, bytes):
            body += (head + f'; filename="{name}.png"\r\nContent-Type: application/octet-stream\r\n\r\n').encode()
            body += value + b"\r\n"
        else:
            body += (head + "\r\n\r\n" + value + "\r\n").encode()
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(url: str, fields: dict[str, bytes | str]) -> tuple[float, bytes]:
    """POST a form -> (seconds to the last byte of the answer, the answer)."""
    body, ctype = form(fields)
    t = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, data=body, headers={"Content-Type": ctype}),
                                timeout=600) as r:
        data = r.read()
    return time.perf_counter() - t, data


def points(i: int, w: int, h: int) -> str:
    colours = ("#c81e1e", "#1e50c8", "#2a9d3a", "#e0a020")
    return json.dumps({"points": [{"x": (97 * i) % w, "y": (61 * i) % h, "color": colours[i % 4]}]})


def figures(name: str, seconds: list[float]) -> str:
    s = sorted(seconds)
    return f"{name}: median {statistics.median(s):.3f} s, p90 {s[int(0.9 * (len(s) - 1))]:.3f} s over {len(s)}"


def colour_png(megapixels: float) -> bytes:
    """examples/coffee.png (in colour) scaled to about ``megapixels``, as PNG bytes."""
    src = cv2.imread(str(ROOT / "examples" / "coffee.png"))
    scale = (megapixels * 1e6 / (src.shape[0] * src.shape[1])) ** 0.5
    size = (round(src.shape[1] * scale), round(src.shape[0] * scale))
    return cv2.imencode(".png", cv2.resize(src, size, interpolation=cv2.INTER_CUBIC))[1].tobytes()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--big", type=int, default=40, help="sessions of --big-megapixels opened after those")
    ap.add_argument("--big-megapixels", type=float, default=12.0)
    ap.add_argument("--big-colour", action="store_true", help="those in colour (3 bytes a pixel kept), not grey")
    ap.add_argument("--checkpoint", default=None, help="model for the server (default: the shipped one)")
    args = ap.parse_args(argv)
    src = cv2.imread(str(ROOT / "examples" / "chelsea_cat.png"), cv2.IMREAD_GRAYSCALE)
    photo = cv2.imencode(".png", cv2.resize(src, (1224, 816), interpolation=cv2.INTER_CUBIC))[1].tobytes()
    w, h = 1224, 816
    proc, url = start_server(args.checkpoint, [])
    try:
        print(f"server started: RSS {rss_kib(proc.pid, 'VmRSS') / 1024:.0f} MiB")
        _, info = post(url + "/api/session", {"image": photo})
        sid = json.loads(info)["session"]
        post(f"{url}/api/session/{sid}/colorize", {"hints": points(0, w, h)})  # warm-up
        again, suggest, oneshot = [], [], []
        for i in range(1, args.repeats + 1):  # interleaved, so that all three see the same machine
            again.append(post(f"{url}/api/session/{sid}/colorize", {"hints": points(i, w, h)})[0])
            suggest.append(post(f"{url}/api/session/{sid}/suggest", {"x": str((53 * i) % w), "y": str((29 * i) % h),
                                                                       "hints": points(i, w, h)})[0])
            oneshot.append(post(url + "/api/colorize", {"image": photo, "hints": points(i, w, h)})[0])
        print(f"1 MP photo ({w} x {h}), PNG out:")
        print("  " + figures("session re-colourise", again))
        print("  " + figures("suggested colours", suggest))
        print("  " + figures("one-shot /api/colorize (upload + decode)", oneshot))
        print(f"  re-colourise / one-shot: median of same-round ratios "
              f"{statistics.median(a / b for a, b in zip(again, oneshot)):.2f}")
        for i in range(args.sessions - 1):
            _, info = post(url + "/api/session", {"image": photo})
            post(f"{url}/api/session/{json.loads(info)['session']}/colorize", {"hints": points(i, w, h)})
        print(f"{args.sessions} sessions of 1 MP open: RSS {rss_kib(proc.pid, 'VmRSS') / 1024:.0f} MiB, "
              f"peak {rss_kib(proc.pid, 'VmHWM') / 1024:.0f} MiB")
        with tempfile.TemporaryDirectory() as tmp:
            big = grey_png(Path(tmp) / "big.png", args.big_megapixels).read_bytes() if not args.big_colour \
                else colour_png(args.big_megapixels)
            rss = []
            for i in range(args.big):
                _, info = post(url + "/api/session", {"image": big})
                post(f"{url}/api/session/{json.loads(info)['session']}/colorize", {})
                rss.append(rss_kib(proc.pid, "VmRSS") / 1024)
        kind = "colour" if args.big_colour else "grey"
        print(f"then {args.big} {kind} sessions of {args.big_megapixels:g} MP ({args.big * args.big_megapixels:g} MP, "
              f"past the store's limits in sessions or bytes): RSS after each {' '.join(f'{r:.0f}' for r in rss)} MiB; "
              f"peak {rss_kib(proc.pid, 'VmHWM') / 1024:.0f} MiB")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

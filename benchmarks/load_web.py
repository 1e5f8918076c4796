"""Load check for the web colourizer (a script that prints figures, not a test).

Starts ``Engine.py --mode serve`` on a free loopback port (or targets --url), sends a
bounded number of concurrent POST /api/colorize requests with one example image, and
prints the success count, latency p50/p95/max (a 503 is retried after its Retry-After, and the
wait counts), throughput, and the server's peak RSS (from /proc, when this script started the
server). Traffic goes to 127.0.0.1 only. scripts/load_test.py measures /healthz under load.

Large-image mode (``--megapixels N``) sends a synthetic greyscale scan of N MP instead, to check
that the server's memory stays bounded however large the uploads.

Usage:
    python benchmarks/load_web.py [--requests 200] [--concurrency 8] [--image examples/coins.png]
    python benchmarks/load_web.py --megapixels 39 --requests 4 --concurrency 4
"""
from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import ROOT, grey_png  # noqa: E402


def multipart(image: Path) -> tuple[bytes, str]:
    boundary = "----colorizer-load"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{image.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + image.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def start_server(checkpoint: str | None, extra: list[str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, str(ROOT / "Engine.py"), "--mode", "serve", "--port", str(port), *extra]
    proc = subprocess.Popen(cmd + (["--checkpoint", checkpoint] if checkpoint else []),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("server exited during start-up")
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--image", default=str(ROOT / "examples" / "coins.png"))
    ap.add_argument("--url", default=None, help="an already running server (RSS is then not measured)")
    ap.add_argument("--checkpoint", default=None, help="model for the server this script starts")
    ap.add_argument("--timeout", type=float, default=600, help="per-request timeout, seconds")
    ap.add_argument("--megapixels", type=float, default=0, help="send a synthetic greyscale scan of this size instead")
    ap.add_argument("--max-concurrent", type=int, default=None, help="the server's --max-concurrent")
    args = ap.parse_args(argv)
    if args.megapixels:
        args.image = str(grey_png(Path(tempfile.gettempdir()) / "colorizer-scans" / f"web_{args.megapixels:g}mp.png",
                                  args.megapixels, grain=0))  # no grain: it keeps the PNG under the upload limit
    body, ctype = multipart(Path(args.image))
    extra = ["--max-concurrent", str(args.max_concurrent)] if args.max_concurrent else []
    proc, url = (None, args.url) if args.url else start_server(args.checkpoint, extra)
    peak, stop = [0], threading.Event()

    def watch():
        while proc is not None and not stop.wait(0.1):
            peak[0] = max(peak[0], rss_kib(proc.pid, "VmRSS"))
    threading.Thread(target=watch, daemon=True).start()
    idle_rss = rss_kib(proc.pid, "VmRSS") if proc else 0

    busy = [0]

    def one(_):  # a 503 (the server's queue is full) is retried after its Retry-After, as a client should
        t = time.perf_counter()
        for _attempt in range(100):
            try:
                req = urllib.request.Request(url + "/api/colorize", data=body, headers={"Content-Type": ctype})
                with urllib.request.urlopen(req, timeout=args.timeout) as r:
                    ok = r.status == 200 and r.headers["Content-Type"] == "image/png" and len(r.read()) > 0
            except urllib.error.HTTPError as e:
                if e.code == 503:
                    busy[0] += 1
                    time.sleep(min(float(e.headers.get("Retry-After") or 1), 10))
                    continue
                ok = False
            except (urllib.error.URLError, OSError):
                ok = False
            return ok, time.perf_counter() - t
        return False, time.perf_counter() - t

    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(one, range(args.requests)))
    finally:
        wall = time.perf_counter() - t0
        stop.set()
        if proc is not None:
            hwm = rss_kib(proc.pid, "VmHWM")
            proc.terminate()
            proc.wait(timeout=10)
    lat = sorted(s for _, s in results)
    q = statistics.quantiles(lat, n=100)
    print(f"{sum(ok for ok, _ in results)}/{args.requests} requests succeeded, {args.concurrency} at a time, "
          f"image {Path(args.image).name} ({len(body) / 2 ** 20:.1f} MiB upload); {busy[0]} answers of 503 retried")
    print(f"latency: p50 {q[49]:.2f} s, p95 {q[94]:.2f} s, max {lat[-1]:.2f} s; "
          f"throughput {args.requests / wall:.2f} requests/s over {wall:.0f} s")
    if proc is not None:
        print(f"server memory: RSS {idle_rss / 1024:.0f} MiB after start-up, peak {max(peak[0], hwm) / 1024:.0f} MiB")
    return 0 if all(ok for ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Load test for the web server: does it stay responsive and memory-bounded while big uploads queue?

Starts ``Engine.py --mode serve`` on a free loopback port (or measures one already running: --url
and --pid), then keeps ``--uploads`` clients each sending one synthetic greyscale scan of
``--megapixels`` MP at once (a client told 503 waits its Retry-After and sends again, so that many
uploads stay in flight), while a probe asks GET /healthz and GET / every ``--probe-every`` seconds.
Prints: upload outcomes (200s, 503s, latency), /healthz and / latency under load (median, worst),
the server's RSS after start-up, its peak during the load (polled, and VmHWM reset just before),
and its RSS ``--settle`` seconds after the last answer. Traffic goes to 127.0.0.1 only; every
request has a timeout and the whole run a deadline (--deadline).

Usage:
    python scripts/load_test.py                          # 8 uploads of 39 MP, shipped model
    python scripts/load_test.py --uploads 8 --megapixels 39 --checkpoint weights/colorizer.pt
    python scripts/load_test.py --url http://127.0.0.1:8000 --pid 12345   # a server started by hand
"""
from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from synthetic import grey_png  # noqa: E402


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """``field`` of /proc/<pid>/status in MiB (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def request(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 30) -> tuple[int, dict, float]:
    """One request on a fresh connection -> (status, headers, seconds); status 0 when it failed."""
    parts = urlsplit(url)
    t = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        r.read()
        return r.status, dict(r.getheaders()), time.perf_counter() - t
    except OSError:
        return 0, {}, time.perf_counter() - t
    finally:
        conn.close()


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, str(ROOT / "Engine.py"), "--mode", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--checkpoint", args.checkpoint] if args.checkpoint else []
    cmd += ["--max-concurrent", str(args.max_concurrent)] if args.max_concurrent else []
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if request(url, "GET", "/healthz", timeout=2)[0] == 200:
            return proc, url
        if proc.poll() is not None:
            raise SystemExit("the server exited during start-up")
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not start within 120 s")


def multipart(data: bytes, name: str) -> tuple[bytes, dict]:
    boundary = "----colorizer-load-test"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def spread(seconds: list[float]) -> str:
    return f"median {statistics.median(seconds):.2f} s, worst {max(seconds):.2f} s ({len(seconds)} probes)" \
        if seconds else "no probes"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--uploads", type=int, default=8, help="clients, each sending one upload (kept in flight)")
    ap.add_argument("--megapixels", type=float, default=39)
    ap.add_argument("--checkpoint", default=None, help="model for the server this script starts")
    ap.add_argument("--max-concurrent", type=int, default=None, help="the server's --max-concurrent")
    ap.add_argument("--url", default=None, help="an already running server instead of starting one")
    ap.add_argument("--pid", type=int, default=None, help="with --url: its process id, to measure its RSS")
    ap.add_argument("--probe-every", type=float, default=0.25, help="seconds between /healthz and / probes")
    ap.add_argument("--settle", type=float, default=5, help="seconds after the load before the last RSS reading")
    ap.add_argument("--deadline", type=float, default=600, help="the whole load phase, seconds")
    args = ap.parse_args(argv)
    args.uploads = max(1, min(args.uploads, 64))  # bounded, whatever is asked
    image = grey_png(Path(tempfile.gettempdir()) / "colorizer-scans" / f"web_{args.megapixels:g}mp.png",
                     args.megapixels, grain=0)  # no grain: the PNG stays under the upload limit
    body, headers = multipart(image.read_bytes(), image.name)
    proc, url = (None, args.url) if args.url else start_server(args)
    if urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit("this script only sends loopback traffic (127.0.0.1)")
    pid = proc.pid if proc else args.pid
    try:
        return run_load(args, url, pid, body, headers, image)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


def run_load(args, url: str, pid: int | None, body: bytes, headers: dict, image: Path) -> int:
    idle = rss_mib(pid) if pid else 0.0
    if pid:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM, so it is the peak of the load alone
        except OSError:
            pass
    peak, done = [idle], threading.Event()
    probes: dict[str, list[float]] = {"/healthz": [], "/": []}
    probe_failures, lock = [0], threading.Lock()
    end_by = time.time() + args.deadline

    def watch():
        while pid and not done.wait(0.05):
            peak[0] = max(peak[0], rss_mib(pid))

    def probe_once(path: str, scheduled: float):
        status = request(url, "GET", path, timeout=30)[0]
        with lock:  # latency from when the probe was due, so that a wait for a free prober thread counts too
            probes[path].append(time.perf_counter() - scheduled) if status == 200 else \
                probe_failures.__setitem__(0, probe_failures[0] + 1)

    def probe():  # on a fixed schedule, each probe on its own thread: a slow answer does not hide the next ones
        with ThreadPoolExecutor(64) as probers:
            while not done.wait(args.probe_every):
                for path in probes:
                    probers.submit(probe_once, path, time.perf_counter())

    def client(_):
        busy = 0
        t0 = time.perf_counter()
        while time.time() < end_by:
            status, answer, _ = request(url, "POST", "/api/colorize", body, headers,
                                        timeout=max(1, end_by - time.time()))
            if status != 503:
                return status, busy, time.perf_counter() - t0
            busy += 1
            time.sleep(min(float(answer.get("Retry-After", 1) or 1), 10))
        return 0, busy, time.perf_counter() - t0

    watchers = [threading.Thread(target=f, daemon=True) for f in (watch, probe)]
    for w in watchers:
        w.start()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.uploads) as pool:
        results = list(pool.map(client, range(args.uploads)))
    wall = time.perf_counter() - t0
    done.set()
    for w in watchers:
        w.join(timeout=35)
    hwm = rss_mib(pid, "VmHWM") if pid else 0.0
    time.sleep(args.settle)
    after = rss_mib(pid) if pid else 0.0
    ok = [s for status, _, s in results if status == 200]
    print(f"{args.uploads} clients x 1 upload of {image.name} ({len(body) / 2 ** 20:.1f} MiB, {args.megapixels:g} MP), "
          f"kept in flight for {wall:.1f} s")
    print(f"uploads: {len(ok)}/{args.uploads} answered 200, {sum(b for _, b, _ in results)} answers of 503 "
          f"(retried after Retry-After), other: {sorted(st for st, _, _ in results if st != 200)}; "
          f"time to a 200: median {statistics.median(ok) if ok else float('nan'):.1f} s, "
          f"worst {max(ok) if ok else float('nan'):.1f} s")
    print(f"GET /healthz under load: {spread(probes['/healthz'])}")
    print(f"GET / under load:        {spread(probes['/'])}; failed probes: {probe_failures[0]}")
    if pid:
        print(f"server RSS: {idle:.0f} MiB idle after start-up, peak {max(peak[0], hwm):.0f} MiB during the load "
              f"(polled {peak[0]:.0f}, VmHWM {hwm:.0f}), {after:.0f} MiB {args.settle:g} s after it")
    return 0 if len(ok) == args.uploads and not probe_failures[0] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Replay the hostile inputs of issue 23 (items 1-10) and print, for each, the outcome and the peak RSS (a script).

Each command-line case runs ``Engine.main`` in a fresh Python process that reports its own peak RSS
(``ru_maxrss``) at exit; the web cases run against a real ``--mode serve`` on a loopback port, whose
peak is read from /proc (VmHWM). Item 2 (big uploads queued) is ``scripts/load_test.py``; pass
``--load`` to run it here too (it takes minutes). Item 7 trains a tiny run, kills it with SIGKILL and
resumes it. Everything happens in a temporary folder; traffic goes to 127.0.0.1 only.

Usage:
    python scripts/hostile_inputs.py [--checkpoint weights/colorizer.onnx] [--load]
"""
from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
from load_test import multipart, request, rss_mib, start_server  # noqa: E402

RUN = """
import resource, sys
sys.path.insert(0, {root!r})
import Engine
rc = Engine.main({argv!r})
print("RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, "rc", rc, file=sys.stderr)
"""


def cli(argv: list[str], cwd: Path) -> tuple[str, str]:
    """(the last error or summary line, 'rc N, peak RSS M MiB') of ``Engine.main(argv)`` in a new process."""
    done = subprocess.run([sys.executable, "-c", RUN.format(root=str(ROOT), argv=argv)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip() and "%|" not in ln]
    rss = next((ln for ln in reversed(lines) if ln.startswith("RSS")), "RSS ? rc ?").split()
    said = [ln for ln in lines if ln.startswith(("error", "wrote", "warning")) and not ln.startswith("RSS")]
    return " | ".join(said[-2:]) or "(nothing said)", f"rc {rss[3]}, peak RSS {rss[1]} MiB"


def png_header_only(path: Path, width: int, height: int) -> Path:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)))
    return path


def photo(path: Path, size=(320, 240), **save) -> Path:
    from PIL import Image
    Image.open(ROOT / "examples" / "chelsea_cat.png").convert("RGB").resize(size).save(path, **save)
    return path


def bad_exif(path: Path) -> Path:
    from PIL import Image
    exif = Image.Exif()
    exif[0x0112], exif[0x011A] = 6, (72, 1)
    photo(path, exif=exif.tobytes())
    path.write_bytes(path.read_bytes().replace(b"\x01\x1a\x00\x05", b"\x01\x07\x00\x05", 1))  # RATIONAL as SHORT tag
    return path


def line(item: str, what: str, outcome: str, cost: str) -> None:
    print(f"{item:<4} {what:<44} {outcome}  [{cost}]", flush=True)


def cli_cases(tmp: Path, model: list[str]) -> None:
    line("1", "39000000x1 PNG (37 KB), CLI", *cli([str(png_header_only(tmp / "wide.png", 39_000_000, 1)),
                                                   "--output", str(tmp / "o1")] + model, tmp))
    folder = tmp / "exif"
    folder.mkdir()
    bad_exif(folder / "bad.jpg")
    photo(folder / "good.jpg")
    line("3", "malformed EXIF in a folder, CLI", *cli([str(folder), "--output", str(tmp / "o3")] + model, tmp))
    for sub in ("a", "b"):
        (tmp / sub).mkdir()
        photo(tmp / sub / "x.jpg")
    outcome, cost = cli([str(tmp / "a"), str(tmp / "b"), "--output", str(tmp / "o5")] + model, tmp)
    files = sorted(str(p.relative_to(tmp / "o5")) for p in (tmp / "o5").rglob("*.png"))
    line("5", "a/x.jpg and b/x.jpg into one --output", f"{outcome}; files {files}", cost)
    inp = tmp / "in9"
    inp.mkdir()
    photo(inp / "p.jpg")
    for _ in range(2):
        outcome, cost = cli([str(inp), "--output", str(inp / "out")] + model, tmp)
    line("9", "--output inside the input, second run", f"{outcome}; {len(list((inp / 'out').rglob('*')))} file(s)",
         cost)
    photo(tmp / "big.jpg", (8000, 6000))
    proc = subprocess.Popen([sys.executable, str(ROOT / "Engine.py"), str(tmp / "big.jpg"), "--output",
                             str(tmp / "o10")] + model, stderr=subprocess.PIPE, text=True, cwd=tmp)
    time.sleep(2.5)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1].strip().splitlines()
    left = [p.name for p in (tmp / "o10").glob("*")] if (tmp / "o10").exists() else []
    line("10", "SIGTERM during a 48 MP colourisation, CLI", f"rc {proc.returncode}, '{err[-1] if err else ''}', "
         f"files left {left}", "-")


def web_cases(tmp: Path, checkpoint: str | None) -> None:
    args = argparse.Namespace(checkpoint=checkpoint, max_concurrent=None)
    proc, url = start_server(args)
    try:
        mpo = tmp / "cam.mpo"
        from PIL import Image
        first = Image.open(ROOT / "examples" / "coffee.png").convert("RGB")
        first.save(mpo, "MPO", save_all=True, append_images=[first.rotate(90)])
        body, headers = multipart(mpo.read_bytes(), "cam.jpg")
        status, _, _ = request(url, "POST", "/api/colorize", body, headers, timeout=120)
        line("6", "MPO upload (two frames)", f"HTTP {status}", f"server peak {rss_mib(proc.pid, 'VmHWM'):.0f} MiB")
        body, headers = multipart((tmp / "wide.png").read_bytes(), "w.png")
        status = request(url, "POST", "/api/colorize", body, headers, timeout=60)[0]
        line("1w", "39000000x1 PNG upload", f"HTTP {status}", f"server peak {rss_mib(proc.pid, 'VmHWM'):.0f} MiB")
        spool = set(Path(tempfile.gettempdir()).iterdir())
        port = int(url.rsplit(":", 1)[1])
        t = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:  # a 300 MB body, as far as it goes
            conn.sendall(b"POST /api/colorize HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b"
                         b"\r\nContent-Length: 300000000\r\n\r\n")
            sent, reply = 0, b""
            try:
                while sent < 300_000_000:
                    conn.sendall(b"x" * 1_000_000)
                    sent += 1_000_000
            except OSError:
                pass
            try:
                reply = conn.recv(4096)
            except OSError:
                pass
        new = set(Path(tempfile.gettempdir()).iterdir()) - spool
        status = reply.split(b"\r\n")[0].decode() or "connection closed"
        line("4", "300 MB body", f"{status} after {sent / 1e6:.0f} MB sent, {time.monotonic() - t:.1f} s; new temp "
             f"files {len(new)}", f"server peak {rss_mib(proc.pid, 'VmHWM'):.0f} MiB")
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn.sendall(b"POST /api/colorize HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        t, reply = time.monotonic(), b""
        conn.settimeout(1)
        while time.monotonic() - t < 200 and not reply.startswith(b"HTTP"):
            try:
                conn.send(b"x")
                reply += conn.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
        conn.close()
        first = reply.split(b"\r\n")[0].decode() or "cut"
        line("8", "body trickled a byte a second", f"{first} after {time.monotonic() - t:.0f} s",
             f"server peak {rss_mib(proc.pid, 'VmHWM'):.0f} MiB")
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        line("10w", "SIGTERM to serve", f"rc {rc}", "-")
    finally:
        if proc.poll() is None:
            proc.kill()


def training_case(tmp: Path) -> None:
    data = tmp / "train"
    data.mkdir()
    for i, name in enumerate(("astronaut", "chelsea_cat", "coffee", "rocket")):
        photo(data / f"{name}.png", (96, 96))
    base = [sys.executable, str(ROOT / "Engine.py"), "--mode", "training", "--data-dir", str(data), "--runs-dir",
            str(tmp / "runs"), "--run-name", "r", "--epochs", "3", "--image-size", "32", "--batch-size", "2",
            "--workers", "0", "--device", "cpu", "--init-from", str(ROOT / "weights" / "colorizer.pt"),
            "--init-member", "1"]
    proc = subprocess.Popen(base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
    log = tmp / "runs" / "r" / "metrics.jsonl"
    deadline = time.time() + 300
    last = tmp / "runs" / "r" / "last.pt"
    while time.time() < deadline and not (last.exists() and log.exists() and log.read_text().count("\n") >= 1):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    outcome, cost = cli(["--mode", "training", "--resume", str(tmp / "runs" / "r"), "--workers", "0",
                         "--device", "cpu", "--runs-dir", str(tmp / "runs")], tmp)
    epochs = [json.loads(x)["epoch"] for x in log.read_text().splitlines() if x.strip()]
    stale = [p.name for p in (tmp / "runs" / "r").glob(".*tmp*")]
    line("7", "training killed (SIGKILL), then --resume", f"{outcome}; epochs logged {epochs}, stale temps {stale}",
         cost)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="model for the CLI and the server (default: the shipped one)")
    ap.add_argument("--load", action="store_true", help="also item 2: scripts/load_test.py, 8 uploads of 39 MP")
    args = ap.parse_args()
    model = ["--checkpoint", args.checkpoint] if args.checkpoint else []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cli_cases(tmp, model)
        web_cases(tmp, args.checkpoint)
        training_case(tmp)
    if args.load:
        subprocess.run([sys.executable, str(ROOT / "scripts" / "load_test.py")] + model, check=False)
    else:
        print("2    big uploads queued: run scripts/load_test.py (or pass --load)")


if __name__ == "__main__":
    main()

"""Take the README's screenshot: start the real server, upload an example in headless Chromium.

Usage:
    python scripts/web_screenshot.py examples/astronaut.png docs/web_screenshot.png [--checkpoint PATH]
"""
from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image")
    ap.add_argument("output")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--width", type=int, default=1100)
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, str(ROOT / "Engine.py"), "--mode", "serve", "--port", str(port)]
    server = subprocess.Popen(cmd + (["--checkpoint", args.checkpoint] if args.checkpoint else []))
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "healthz", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
            page = browser.new_page(viewport={"width": args.width, "height": 760})
            page.goto(url)
            page.set_input_files("#file", args.image)
            page.wait_for_function("document.getElementById('status').textContent.startsWith('Done')", timeout=120000)
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.output, full_page=True)
            print(page.text_content("#status"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Take the README's screenshots: start the real server, upload an example in headless Chromium, then (with
--point) click a colour point, show the model's suggested colours, choose --color and show the confidence overlay.

Writes OUTPUT (after the upload) and, with --point, OUTPUT's stem + "_points" (the suggestions open),
+ "_chosen" (the colour chosen) and + "_unsure" (the confidence overlay on) beside it.

Usage:
    python scripts/web_screenshot.py examples/astronaut.png docs/web_page.jpg [--checkpoint PATH]
    python scripts/web_screenshot.py examples/astronaut.png docs/web_page.jpg --point 15 285 --color "#b22234"
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
    ap.add_argument("--point", type=int, nargs=2, metavar=("X", "Y"), help="a colour point, in the photo's pixels")
    ap.add_argument("--color", default="#b22234", help="the colour chosen for --point")
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
            page.wait_for_selector("#status:text-matches('^Done')", timeout=120000)  # not wait_for_function: the CSP
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            shoot(page, Path(args.output))
            print(page.text_content("#status"))
            if args.point:
                tour(page, args.point, args.color, Path(args.output))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


def shoot(page, path: Path) -> None:
    """A full-page screenshot: PNG, or JPEG at quality 85 for a .jpg path."""
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    page.screenshot(path=str(path), full_page=True, **({"quality": 85} if jpeg else {}))


def tour(page, point: list[int], color: str, output: Path) -> None:
    """Click ``point`` on the result, screenshot the suggestions, choose ``color``, screenshot, turn the overlay on,
    screenshot."""
    size = page.evaluate("[document.getElementById('result-img').naturalWidth, "
                         "document.getElementById('result-img').naturalHeight]")
    page.locator("#result-img").scroll_into_view_if_needed()
    box = page.locator("#result-img").bounding_box()
    with page.expect_response(lambda r: r.url.endswith("/colorize")):
        page.mouse.click(box["x"] + (point[0] + 0.5) / size[0] * box["width"],
                         box["y"] + (point[1] + 0.5) / size[1] * box["height"])
    page.wait_for_selector("#status:text-matches('^Done')", timeout=120000)
    swatches = page.locator("#swatches .swatch")
    print("suggested:", ", ".join(f"{swatches.nth(i).get_attribute('data-color')} {swatches.nth(i).text_content()}"
                                  for i in range(swatches.count())))
    shoot(page, output.with_name(output.stem + "_points" + output.suffix))
    with page.expect_response(lambda r: r.url.endswith("/colorize")):
        page.fill("#custom-color", color)
    page.wait_for_selector("#status:text-matches('^Done')", timeout=120000)
    page.click("#close-picker")
    shoot(page, output.with_name(output.stem + "_chosen" + output.suffix))
    page.check("#show-confidence")
    page.wait_for_selector("#confidence[data-shown]", state="visible", timeout=120000)
    page.wait_for_timeout(300)
    shoot(page, output.with_name(output.stem + "_unsure" + output.suffix))


if __name__ == "__main__":
    sys.exit(main())

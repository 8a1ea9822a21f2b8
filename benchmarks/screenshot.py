"""The README's picture of the keyboard page: `rnnlab serve DIR` in a thread, Debian's Chromium
(driven by Playwright, as `tests/test_browser.py` does) types a text and takes the picture once the
page shows the served words for it.

    python benchmarks/screenshot.py runs/timemachine --text "The Time Traveller looked at the mach" \
        --out docs/keyboard.png
"""
from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--text", default="The Time Traveller looked at the mach")
    p.add_argument("--out", default="docs/keyboard.png")
    p.add_argument("--width", type=int, default=820)
    p.add_argument("--height", type=int, default=560)
    a = p.parse_args(argv)

    import uvicorn
    from playwright.sync_api import sync_playwright

    from rnnlab.config import ServeConfig
    from rnnlab.serve import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(a.checkpoint, ServeConfig(suggest_worker="thread"), log=print), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": a.width, "height": a.height})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('model-info').textContent.length > 20")
            page.locator("#text").press_sequentially(a.text, delay=30)
            page.wait_for_function("t => document.getElementById('completions').dataset.for === t", arg=a.text,
                                   timeout=30000)
            page.locator("#text").focus()
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=a.out)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

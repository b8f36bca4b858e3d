"""`python -m examples.chat.screenshot [PATH]`: run the demo on free ports, hold a short
conversation in headless Chromium (Debian's, through Playwright) and save a screenshot
of it (docs/chat-demo.png by default)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, ViewportSize, sync_playwright

CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait(page: Page, count: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('#log li').length >= {count}")


def main() -> int:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/chat-demo.png")
    port, app_port = _free_port(), _free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "examples.chat", "--port", str(port), "--app-port", str(app_port)]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(url + "/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the demo did not start")
            time.sleep(0.1)
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True)
            size: ViewportSize = {"width": 960, "height": 540}
            alice = browser.new_context(viewport=size).new_page()
            bob = browser.new_context(viewport=size).new_page()
            alice.goto(f"{url}/?name=alice&room=general")
            alice.goto(f"{url}/?name=alice&room=lobby")
            _wait(alice, 1)
            bob.goto(f"{url}/?name=bob&room=lobby")
            _wait(alice, 2)
            for page, text, count in [
                (alice, "Hi Bob! Every message here is pushed by PushUp.", 3),
                (bob, "Hi Alice. One long poll per browser, shared by all my tabs.", 4),
                (alice, "And a reload catches up from the cursor.", 5),
            ]:
                page.fill("#text", text)
                page.press("#text", "Enter")
                _wait(alice, count)
                _wait(bob, count)
            for text in ("Anyone around?", "Lunch at noon"):
                body = {"name": "carol", "room": "general", "text": text}
                httpx.post(f"{url}/api/messages", json=body).raise_for_status()
            alice.wait_for_selector("#rooms .unread")
            alice.screenshot(path=str(target))
            browser.close()
    finally:
        demo.terminate()
        demo.wait(timeout=15)
    print(f"saved {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

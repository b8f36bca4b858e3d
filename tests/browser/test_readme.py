"""The README's browser example, as written, in Chromium on the server's origin: it shows
the messages of a channel, and says so when the channel does not exist."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from playwright.sync_api import ConsoleMessage, Page, Route

from tests.browser.conftest import ContextFactory
from tests.conftest import ServerFactory
from tests.helpers import readme_blocks, wait_for


def _serving(body: str) -> Callable[[Route], None]:
    return lambda route: route.fulfill(body=body, content_type="text/html")


def _recording(lines: list[str]) -> Callable[[ConsoleMessage], None]:
    return lambda message: lines.append(f"{message.type}: {message.text}")


def test_the_browser_example(server_factory: ServerFactory, new_context: ContextFactory) -> None:
    server = server_factory("--data-dir", "none")
    (html,) = [b for b in readme_blocks("html") if "/pushup.js" in b]
    httpx.post(f"{server.url}/channels", json={"name": "tag:c++"}).raise_for_status()
    pages = {"/readme": html, "/readme-missing": html.replace("tag:c++", "no-such-channel")}
    logged: dict[str, list[str]] = {path: [] for path in pages}
    opened: list[Page] = []
    for path, body in pages.items():
        # A context each: the tabs of one profile would share a poll.
        context = new_context()
        context.route(f"{server.url}{path}", _serving(body))
        page = context.new_page()
        page.on("console", _recording(logged[path]))
        page.goto(f"{server.url}{path}")
        opened.append(page)

    def shown(path: str, text: str) -> bool:
        for page in opened:
            page.evaluate("0")  # Playwright hands over console events during its calls
        return any(text in line for line in logged[path])

    def published_and_shown() -> bool:
        httpx.post(
            f"{server.url}/publish", json={"channels": ["tag:c++"], "data": {"title": "Hello"}}
        ).raise_for_status()
        return shown("/readme", "log: ")

    wait_for(published_and_shown, timeout=15, interval=0.5, what="the message in the console")
    wait_for(
        lambda: shown("/readme-missing", "no such channel"),
        timeout=15,
        what="the missing channel reported",
    )
    assert all(line.startswith("log: ") for line in logged["/readme"]), logged

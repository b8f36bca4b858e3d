"""`/pushup.js` on a page of another origin, with subscriber tokens, in real Chromium:
the module is imported across origins (CORS), every transport subscribes with a token
from a function, and a stream whose token expires comes back with a fresh one and
misses nothing.

The page's origin is `http://localhost:PORT` and PushUp's `http://127.0.0.1:PORT`: one
server, two origins."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from playwright.sync_api import Page

from tests.browser.conftest import ContextFactory
from tests.helpers import ServerProcess, start_server, wait_for

SECRET = "a-subscriber-secret-of-at-least-32-bytes"
LEEWAY_S = 10.0

# Imports the client from PushUp's origin and subscribes with a token function that
# hands out the page's `window.tokens` in turn (the last one for good), counting calls.
SUBSCRIBE = """async ({ base, options }) => {
  const { subscribe } = await import(base + "pushup.js");
  window.got = []; window.errors = []; window.calls = 0;
  window.handle = subscribe({
    ...options,
    baseUrl: base,
    share: false,
    token: async () => window.tokens[Math.min(window.calls++, window.tokens.length - 1)],
    onMessage: (message) => window.got.push(message.data),
    onError: (error) => window.errors.push(String(error)),
  });
}"""


def mint(channels: list[Any], exp_in: float = 600.0) -> str:
    return jwt.encode(
        {"channels": channels, "exp": int(time.time() + exp_in)}, SECRET, algorithm="HS256"
    )


@pytest.fixture(scope="module")
def api() -> Iterator[ServerProcess]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = start_server(
        "--cors-origins",
        f"http://localhost:{port}",
        env={"PUSHUP_SUBSCRIBER_SECRET": SECRET},
        port=port,
    )
    yield server
    server.stop()
    assert "Traceback" not in server.log()


def create(api: ServerProcess, name: str) -> None:
    assert httpx.post(f"{api.url}/channels", json={"name": name}).status_code == 201


def publish(api: ServerProcess, channel: str, data: Any) -> None:
    response = httpx.post(f"{api.url}/publish", json={"channels": [channel], "data": data})
    assert response.status_code == 201


def parked(api: ServerProcess, channel: str) -> int:
    count: int = httpx.get(f"{api.url}/channels/{channel}").json()["subscribers"]
    return count


def open_page(new_context: ContextFactory, api: ServerProcess, tokens: list[str]) -> Page:
    page = new_context().new_page()
    page.goto(f"http://localhost:{api.port}/health")
    page.evaluate("(tokens) => { window.tokens = tokens; }", tokens)
    return page


def got(page: Page) -> list[Any]:
    result: list[Any] = page.evaluate("window.got")
    return result


@pytest.mark.parametrize("transport", ["longpoll", "sse", "ws"])
def test_a_page_on_another_origin_subscribes_with_a_token(
    api: ServerProcess, new_context: ContextFactory, transport: str
) -> None:
    channel = f"access-{transport}"
    create(api, channel)
    page = open_page(new_context, api, [mint([channel])])
    options = {"channels": [channel], "transport": transport}
    page.evaluate(SUBSCRIBE, {"base": f"{api.url}/", "options": options})
    wait_for(lambda: parked(api, channel) == 1, what="the subscription")
    publish(api, channel, 1)
    wait_for(lambda: got(page) == [1], what=f"1, not {got(page)}")
    assert page.evaluate("window.handle.transport") == transport
    assert page.evaluate("window.errors") == []


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_a_stream_whose_token_expires_comes_back_with_a_fresh_one(
    api: ServerProcess, new_context: ContextFactory, transport: str
) -> None:
    channel = f"expiring-{transport}"
    create(api, channel)
    # The first token is past its `exp`, within the leeway: the server ends the stream
    # in about 2 s. The function then hands out a good one.
    page = open_page(new_context, api, [mint([channel], -(LEEWAY_S - 2)), mint([channel])])
    options = {"channels": [channel], "transport": transport}
    page.evaluate(SUBSCRIBE, {"base": f"{api.url}/", "options": options})
    wait_for(lambda: parked(api, channel) == 1, what="the stream")
    publish(api, channel, 1)
    wait_for(lambda: got(page) == [1], what=f"1, not {got(page)}")
    wait_for(lambda: page.evaluate("window.calls") >= 2, timeout=20, what="a fresh token")
    wait_for(lambda: parked(api, channel) == 1, what="the stream again")
    publish(api, channel, 2)
    wait_for(lambda: got(page) == [1, 2], what=f"1, 2, not {got(page)}")
    assert page.evaluate("window.handle.transport") == transport

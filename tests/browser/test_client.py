"""The browser client `/pushup.js` in real Chromium against a real server: order and
cursor, tabs sharing one poll with a change of leader, catching up, closed channels,
gaps, and backing off while the server is down."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page

from tests.browser.conftest import ContextFactory
from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, wait_for

# Subscribes the page, recording what each callback gets in window globals.
SUBSCRIBE = """async (options) => {
  const { subscribe } = await import("/pushup.js");
  window.got = []; window.gaps = 0; window.lost = []; window.errors = [];
  window.handle = subscribe({
    ...options,
    onMessage: (message) => window.got.push(message.data),
    onGap: () => { window.gaps += 1; },
    onClosed: (gone) => window.lost.push(...gone),
    onError: (error) => window.errors.push(String(error)),
  });
}"""


def open_page(context: BrowserContext, server: ServerProcess) -> Page:
    """A page on the server's origin (any of its URLs will do), to import the client."""
    page = context.new_page()
    page.goto(f"{server.url}/health")
    return page


def subscribe(page: Page, channels: list[str], **options: Any) -> None:
    page.evaluate(SUBSCRIBE, {"channels": channels, "timeout": 20, **options})


TRANSPORTS = ["longpoll", "sse", "ws"]


def got(page: Page) -> list[Any]:
    result: list[Any] = page.evaluate("window.got")
    return result


def role(page: Page) -> str:
    result: str = page.evaluate("window.handle.role")
    return result


def publish(server: ServerProcess, channels: list[str], data: Any) -> str:
    response = httpx.post(f"{server.url}/publish", json={"channels": channels, "data": data})
    assert response.status_code == 201, response.text
    message_id: str = response.json()["id"]
    return message_id


def create(server: ServerProcess, name: str) -> None:
    response = httpx.post(f"{server.url}/channels", json={"name": name})
    assert response.status_code == 201, response.text


def parked(server: ServerProcess, channel: str) -> int:
    response = httpx.get(f"{server.url}/channels/{quote(channel, safe='')}")
    count: int = response.json()["subscribers"]
    return count


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_messages_arrive_in_order_once_and_the_cursor_follows(
    server: ServerProcess, new_context: ContextFactory, transport: str
) -> None:
    create(server, "a")
    create(server, "b")
    page = open_page(new_context(), server)
    subscribe(page, ["a", "b"], transport=transport)
    wait_for(lambda: parked(server, "a") == 1, what="the poll to park")
    response = httpx.post(
        f"{server.url}/publish/batch",
        json={"messages": [{"channels": ["a"], "data": 1}, {"channels": ["a", "b"], "data": 2}]},
    )
    assert response.status_code == 201
    last = publish(server, ["b"], 3)
    wait_for(lambda: got(page) == [1, 2, 3], what=f"1, 2, 3, not {got(page)}")
    assert page.evaluate("window.handle.cursor") == last
    assert role(page) == "leader"
    assert page.evaluate("window.handle.transport") == transport
    assert page.evaluate("window.errors") == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_last_starts_from_the_newest_cached_messages(
    server: ServerProcess, new_context: ContextFactory, transport: str
) -> None:
    create(server, "chat")
    for n in range(10):
        publish(server, ["chat"], n)
    page = open_page(new_context(), server)
    subscribe(page, ["chat"], transport=transport, last=3)
    wait_for(lambda: got(page) == [7, 8, 9], what=f"7, 8, 9, not {got(page)}")
    wait_for(lambda: parked(server, "chat") == 1, what="the subscription to park")
    publish(server, ["chat"], 10)
    publish(server, ["chat"], 11)
    wait_for(lambda: got(page) == [7, 8, 9, 10, 11], what=f"10 and 11 too, not {got(page)}")
    assert page.evaluate("window.errors") == []


def test_tabs_share_one_poll_and_the_next_leader_misses_nothing(
    server: ServerProcess, new_context: ContextFactory
) -> None:
    create(server, "room")
    context = new_context()
    pages = [open_page(context, server) for _ in range(3)]
    for page in pages:
        subscribe(page, ["room"])
    wait_for(
        lambda: sorted(role(page) for page in pages) == ["follower", "follower", "leader"],
        what="one leader and two followers",
    )
    wait_for(lambda: parked(server, "room") == 1, what="one parked poll for three tabs")
    for i in range(3):
        publish(server, ["room"], i)
    for page in pages:
        wait_for(lambda page=page: got(page) == [0, 1, 2], what=f"0-2 in every tab: {got(page)}")
    assert parked(server, "room") <= 1

    leader = next(page for page in pages if role(page) == "leader")
    leader.close()
    rest = [page for page in pages if page is not leader]
    # Published while the lock changes hands: the next leader polls from its cursor.
    for i in range(3, 6):
        publish(server, ["room"], i)
    wait_for(
        lambda: sorted(role(page) for page in rest) == ["follower", "leader"],
        what="a new leader",
    )
    for page in rest:
        wait_for(
            lambda page=page: got(page) == list(range(6)),
            what=f"0-5, once each, in every tab left: {got(page)}",
        )
    wait_for(lambda: parked(server, "room") == 1, what="one parked poll again")
    publish(server, ["room"], 6)
    for page in rest:
        wait_for(lambda page=page: got(page) == list(range(7)), what=f"0-6: {got(page)}")


def test_a_tab_that_joins_a_leader_catches_up_from_its_own_cursor(
    server: ServerProcess, new_context: ContextFactory
) -> None:
    create(server, "room")
    context = new_context()
    first = open_page(context, server)
    subscribe(first, ["room"])
    wait_for(lambda: parked(server, "room") == 1, what="the leader's poll")
    since = publish(server, ["room"], 1)
    publish(server, ["room"], 2)
    wait_for(lambda: got(first) == [1, 2], what="1, 2 at the leader")
    second = open_page(context, server)
    subscribe(second, ["room"], since=since)
    wait_for(lambda: got(second) == [2], what=f"the follower's catch-up: {got(second)}")
    assert role(second) == "follower"
    publish(server, ["room"], 3)
    wait_for(lambda: got(second) == [2, 3], what=f"then the relays: {got(second)}")
    assert got(first) == [1, 2, 3]


def test_a_reloaded_page_resumes_from_its_stored_cursor(
    server: ServerProcess, new_context: ContextFactory
) -> None:
    create(server, "room")
    page = open_page(new_context(), server)
    subscribe(page, ["room"], cursorKey="cursor")
    publish(server, ["room"], 1)
    wait_for(lambda: got(page) == [1], what="1")
    page.reload()
    # Published while no page listens.
    publish(server, ["room"], 2)
    publish(server, ["room"], 3)
    subscribe(page, ["room"], cursorKey="cursor")
    wait_for(lambda: got(page) == [2, 3], what=f"2, 3 only: {got(page)}")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_closed_channels_are_reported_and_the_rest_goes_on(
    server: ServerProcess, new_context: ContextFactory, transport: str
) -> None:
    create(server, "a")
    create(server, "b")
    page = open_page(new_context(), server)
    subscribe(page, ["a", "b"], transport=transport)
    wait_for(lambda: parked(server, "a") == 1, what="the poll to park")
    assert httpx.delete(f"{server.url}/channels/a").status_code == 204
    # The 410 names it by id; the next poll's 404 names it as given.
    wait_for(lambda: page.evaluate("window.lost") == ["a"], what="a reported closed")
    assert page.evaluate("window.handle.channels") == ["b"]
    publish(server, ["b"], "still here")
    wait_for(lambda: got(page) == ["still here"], what="b's message")
    assert httpx.delete(f"{server.url}/channels/b").status_code == 204
    wait_for(lambda: role(page) == "stopped", what="the subscription to stop with no channel")
    assert page.evaluate("window.lost") == ["a", "b"]
    assert page.evaluate("window.handle.transport") == transport


def test_a_gap_is_reported(server_factory: ServerFactory, new_context: ContextFactory) -> None:
    server = server_factory("--max-messages", "2")
    create(server, "room")
    since = publish(server, ["room"], 1)
    for i in range(2, 6):
        publish(server, ["room"], i)
    page = open_page(new_context(), server)
    subscribe(page, ["room"], since=since)
    wait_for(lambda: got(page) == [4, 5], what=f"the cached 4, 5: {got(page)}")
    assert page.evaluate("window.gaps") == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_polls_back_off_while_the_server_is_down_and_resume(
    server_factory: ServerFactory, new_context: ContextFactory, tmp_path: Path, transport: str
) -> None:
    data = str(tmp_path / "data")
    server = server_factory("--data-dir", data)
    create(server, "room")
    page = open_page(new_context(), server)
    subscribe(page, ["room"], transport=transport, backoffBase=50, backoffMax=400)
    publish(server, ["room"], 1)
    wait_for(lambda: got(page) == [1], what="1")
    server.stop()
    wait_for(lambda: len(page.evaluate("window.errors")) >= 2, what="failed polls")
    server = server_factory("--data-dir", data, port=server.port)
    publish(server, ["room"], 2)
    wait_for(lambda: got(page) == [1, 2], what=f"2 after the restart: {got(page)}")
    assert role(page) == "leader"
    assert page.evaluate("window.handle.transport") == transport


def test_a_stream_that_cannot_open_falls_back_to_long_polling(
    server: ServerProcess, new_context: ContextFactory
) -> None:
    # As a proxy that passes neither would: the SSE endpoint answers 502, the
    # WebSocket is refused.
    create(server, "room")
    context = new_context()
    context.route("**/subscribe/sse*", lambda route: route.fulfill(status=502, body="no"))
    context.route_web_socket("**/subscribe/ws*", lambda ws: ws.close())
    pages = {transport: open_page(context, server) for transport in ("sse", "ws")}
    for transport, page in pages.items():
        # Separate tabs that do not share: each must fall back by itself.
        subscribe(page, ["room"], transport=transport, share=False)
    for page in pages.values():
        wait_for(lambda page=page: page.evaluate("window.handle.transport") == "longpoll")
    publish(server, ["room"], 1)
    for page in pages.values():
        wait_for(lambda page=page: got(page) == [1], what=f"1 by long poll: {got(page)}")


def test_the_client_is_served_as_javascript_with_an_etag(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/pushup.js")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == "public, max-age=300"
    assert b"export function subscribe" in response.content
    etag = response.headers["etag"]
    again = httpx.get(f"{server.url}/pushup.js", headers={"If-None-Match": f'"other", {etag}'})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    changed = httpx.get(f"{server.url}/pushup.js", headers={"If-None-Match": '"other"'})
    assert changed.status_code == 200
    refused = httpx.post(f"{server.url}/pushup.js")
    assert refused.status_code == 405
    assert refused.json()["error"] == "method_not_allowed"

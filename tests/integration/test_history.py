"""History controls of a poll, on every engine: `last=N` answers the N newest matching
messages (a page that opens shows the end of a chat), `limit=N` the N oldest after the
cursor with `"more"` saying whether another page is cached, so a client pages through
the cache without a gap or a repeat."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import websockets.sync.client

from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, wait_for
from tests.integration.test_sse import EventStream
from tests.integration.test_subscriber_api import assert_error

Json = dict[str, Any]


@pytest.fixture(params=["memory", "redis", "nats"])
def node(request: pytest.FixtureRequest, server_factory: ServerFactory) -> ServerProcess:
    """A server on each engine in turn."""
    flags: tuple[str, ...] = ("--data-dir", "none")
    if request.param != "memory":
        flags = ("--engine", str(request.getfixturevalue(f"{request.param}_url")))
    return server_factory(*flags)


@pytest.fixture
def client(node: ServerProcess) -> Iterator[httpx.Client]:
    with node.client() as http:
        yield http


def channel(client: httpx.Client, name: str) -> int:
    made = client.post("/channels", json={"name": name})
    assert made.status_code == 201, made.text
    channel_id: int = made.json()["id"]
    return channel_id


def publish(client: httpx.Client, channels: list[int], count: int, first: int = 0) -> list[str]:
    """`count` messages, data first..first+count-1, in one batch; their ids."""
    messages = [{"channels": channels, "data": n} for n in range(first, first + count)]
    published = client.post("/publish/batch", json={"messages": messages})
    assert published.status_code == 201, published.text
    return [item["id"] for item in published.json()["messages"]]


def poll(client: httpx.Client, channels: list[int], **params: Any) -> Json:
    query = {"channels": ",".join(map(str, channels)), "timeout": 0, **params}
    answer = client.get("/subscribe", params=query)
    assert answer.status_code == 200, answer.text
    body: Json = answer.json()
    return body


def data(body: Json) -> list[Any]:
    return [message["data"] for message in body["messages"]]


def test_last_answers_the_newest_messages_then_the_cursor_goes_on_from_them(
    client: httpx.Client,
) -> None:
    chat = channel(client, "chat")
    ids = publish(client, [chat], 30)
    first = poll(client, [chat], last=5)
    assert data(first) == [25, 26, 27, 28, 29]
    assert first["cursor"] == ids[-1] and first["gap"] is False
    assert "more" not in first
    publish(client, [chat], 2, first=30)
    assert data(poll(client, [chat], since=first["cursor"], last=5)) == [30, 31]
    # Fewer cached than asked for: all of them.
    assert data(poll(client, [chat], last=100)) == list(range(32))


def test_last_keeps_to_the_time_range_and_the_cursor(client: httpx.Client) -> None:
    chat = channel(client, "ranged")
    ids = publish(client, [chat], 10)
    middle = poll(client, [chat], since=ids[1])["messages"]
    end = middle[4]["time"]  # the 7th message (data 6)
    assert data(poll(client, [chat], since=ids[1], end=end, last=3)) == [4, 5, 6]


def test_limit_pages_through_the_cache_without_a_gap_or_a_repeat(client: httpx.Client) -> None:
    left, right = channel(client, "left"), channel(client, "right")
    publish(client, [left], 12)
    publish(client, [left, right], 6, first=12)  # read once by a poll on both
    publish(client, [right], 7, first=18)
    pages, cursor = [], None
    while True:
        params: Json = {"limit": 10} if cursor is None else {"limit": 10, "since": cursor}
        page = poll(client, [left, right], **params)
        pages.append(data(page))
        cursor = page["cursor"]
        if not page["more"]:
            break
    assert [len(page) for page in pages] == [10, 10, 5]
    assert [n for page in pages for n in page] == list(range(25))
    # The last page's cursor is the newest message's: nothing left, and "more" is false.
    empty = poll(client, [left, right], limit=10, since=cursor)
    assert empty["messages"] == [] and empty["more"] is False and empty["cursor"] == cursor


def test_a_parked_paged_poll_woken_by_a_batch_gets_one_page(
    node: ServerProcess, client: httpx.Client
) -> None:
    chat = channel(client, "woken")
    cursor = poll(client, [chat])["cursor"]
    with ThreadPoolExecutor(1) as pool, node.client() as waiting:
        parked = pool.submit(
            waiting.get,
            "/subscribe",
            params={"channels": chat, "since": cursor, "limit": 2, "timeout": 20},
        )
        wait_for(
            lambda: client.get(f"/channels/{chat}").json()["subscribers"] == 1,
            what="the poll to park",
        )
        publish(client, [chat], 5)
        woken = parked.result(timeout=20).json()
    assert data(woken) == [0, 1] and woken["more"] is True
    rest = poll(client, [chat], since=woken["cursor"], limit=10)
    assert data(rest) == [2, 3, 4] and rest["more"] is False


def test_a_stream_starts_with_the_last_messages_then_sends_every_new_one(
    node: ServerProcess, client: httpx.Client
) -> None:
    chat = channel(client, "streamed")
    publish(client, [chat], 10)
    stream = EventStream.open(node.port, f"/subscribe?channels={chat}&last=3")
    try:
        assert stream.head.status == 200
        assert [stream.next_event().json()["data"] for _ in range(3)] == [7, 8, 9]
        publish(client, [chat], 4, first=10)
        assert [stream.next_event().json()["data"] for _ in range(4)] == [10, 11, 12, 13]
    finally:
        stream.sock.close()


def test_a_websocket_starts_with_the_last_messages_too(
    node: ServerProcess, client: httpx.Client
) -> None:
    chat = channel(client, "socket")
    publish(client, [chat], 6)
    url = f"ws://127.0.0.1:{node.port}/subscribe/ws?channels={chat}&last=2"
    with websockets.sync.client.connect(url, open_timeout=20) as socket:
        assert [json.loads(socket.recv(timeout=20))["data"] for _ in range(2)] == [4, 5]
        publish(client, [chat], 3, first=6)
        assert [json.loads(socket.recv(timeout=20))["data"] for _ in range(3)] == [6, 7, 8]


@pytest.mark.parametrize(
    "query",
    [
        "last=0",
        "last=-1",
        "last=abc",
        "limit=0",
        "limit=10001",
        "limit=1.5",
        "last=2&limit=2",
        "last=1&last=2",
    ],
)
def test_a_bad_history_control_is_a_400_naming_it(client: httpx.Client, query: str) -> None:
    chat = channel(client, "bad")
    answer = client.get(f"/subscribe?channels={chat}&timeout=0&{query}")
    body = assert_error(answer, 400, "invalid_parameter")
    assert query.split("=")[0] in body["detail"]


def test_a_stream_does_not_page(node: ServerProcess, client: httpx.Client) -> None:
    chat = channel(client, "unpaged")
    websocket = client.get(
        f"/subscribe/ws?channels={chat}&limit=5",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert_error(websocket, 400, "invalid_parameter")
    stream = EventStream.open(node.port, f"/subscribe?channels={chat}&limit=5")
    try:
        assert stream.head.status == 400
        assert b"limit" in stream.head.body
    finally:
        stream.sock.close()

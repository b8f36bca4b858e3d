"""Server-Sent Events (`GET /subscribe/sse`, or `/subscribe` with `Accept:
text/event-stream`) against a real server, read with a raw socket.

Most tests share one module-scoped server (short ping interval) and work on channels
of their own. A test waits for a stream to be subscribed by watching `subscribers` in
`GET /channels/{id}`, and for the server to stream something by reading it.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.helpers import ServerProcess, start_server, wait_for

ServerFactory = Callable[..., ServerProcess]
Json = dict[str, Any]

PING_INTERVAL = 0.3
MAX_TIMEOUT = 30
MESSAGE_FIELDS = {"id", "time", "channels", "data"}


# -- an event-stream client on a raw socket -------------------------------------------


@dataclass
class Event:
    event: str  # "message" when the server named none
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Head:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes = b""


@dataclass
class EventStream:
    """One `GET` whose answer is read as an event stream, as EventSource does."""

    sock: socket.socket
    head: Head
    buffer: bytearray = field(default_factory=bytearray)
    comments: list[str] = field(default_factory=list)
    closed: bool = False

    @classmethod
    def open(
        cls,
        port: int,
        path: str,
        headers: dict[str, str] | None = None,
        *,
        accept: str = "text/event-stream",
    ) -> EventStream:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10.0)
        lines = [f"GET {path} HTTP/1.1", "Host: pushup", f"Accept: {accept}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        stream = cls(sock, Head(0, {}))
        while b"\r\n\r\n" not in stream.buffer:
            stream._more(10.0)
        end = stream.buffer.index(b"\r\n\r\n")
        status_line, *header_lines = bytes(stream.buffer[:end]).decode("latin-1").split("\r\n")
        del stream.buffer[: end + 4]
        names = [line.partition(":") for line in header_lines]
        stream.head = Head(
            int(status_line.split(" ")[1]),
            {name.strip().lower(): value.strip() for name, _, value in names},
        )
        length = stream.head.headers.get("content-length")
        if length is not None:  # a plain HTTP answer, not a stream
            while len(stream.buffer) < int(length):
                stream._more(10.0)
            stream.head.body = bytes(stream.buffer)
        return stream

    def _more(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        chunk = self.sock.recv(65536)
        if not chunk:
            self.closed = True
            raise EOFError("the server ended the stream")
        self.buffer += chunk

    def next_event(self, timeout: float = 10.0) -> Event:
        """The next dispatched event; comment lines are kept in `comments`."""
        deadline = time.monotonic() + timeout
        while True:
            event = self._parse_one()
            if event is not None:
                return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no event within {timeout}s; unread {bytes(self.buffer)!r}")
            self._more(left)

    def _parse_one(self) -> Event | None:
        while b"\n\n" in self.buffer:
            end = self.buffer.index(b"\n\n")
            block = bytes(self.buffer[:end]).decode()
            del self.buffer[: end + 2]
            name, data, last_id = "message", [], None
            for line in block.split("\n"):
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                key, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if key == "event":
                    name = value
                elif key == "data":
                    data.append(value)
                elif key == "id":
                    last_id = value
            if data:
                return Event(name, "\n".join(data), last_id)
        return None

    def wait_comment(self, text: str, timeout: float = 10.0) -> None:
        """Read (and keep) events until a comment line `text` has come."""
        deadline = time.monotonic() + timeout
        while text not in self.comments:
            self._parse_one()
            if text in self.comments:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {text!r} comment within {timeout}s")
            self._more(left)

    def assert_ends(self, timeout: float = 10.0) -> None:
        """Nothing but comments comes before the server closes the connection."""
        deadline = time.monotonic() + timeout
        while True:
            event = self._parse_one()
            assert event is None, f"unexpected event {event}"
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the server did not end the stream")
            try:
                self._more(left)
            except EOFError:
                return

    def close(self) -> None:
        self.sock.close()


# -- fixtures and helpers ----------------------------------------------------------------


@pytest.fixture(scope="module")
def api() -> Iterator[ServerProcess]:
    server = start_server("--max-timeout", str(MAX_TIMEOUT), "--ping-interval", str(PING_INTERVAL))
    yield server
    server.stop_checked()


@pytest.fixture(scope="module")
def pub(api: ServerProcess) -> httpx.Client:
    return api.client()


@pytest.fixture
def streams() -> Iterator[list[EventStream]]:
    opened: list[EventStream] = []
    yield opened
    for stream in opened:
        stream.close()


def create(client: httpx.Client, **body: Any) -> int:
    response = client.post("/channels", json=body)
    assert response.status_code == 201, response.text
    channel_id: int = response.json()["id"]
    return channel_id


def publish(client: httpx.Client, channels: list[int], data: Any = None) -> Json:
    response = client.post("/publish", json={"channels": channels, "data": data})
    assert response.status_code == 201, response.text
    result: Json = response.json()
    return result


def subscribers(client: httpx.Client, channel: int) -> int:
    response = client.get(f"/channels/{channel}")
    assert response.status_code == 200, response.text
    count: int = response.json()["subscribers"]
    return count


def wait_subscribers(client: httpx.Client, channel: int, count: int) -> None:
    wait_for(lambda: subscribers(client, channel) == count, what=f"{count} subscribers")


def path(route: str, channels: list[int], **params: Any) -> str:
    return f"{route}?" + urlencode({"channels": ",".join(map(str, channels)), **params})


def open_stream(
    api: ServerProcess,
    opened: list[EventStream],
    channels: list[int],
    headers: dict[str, str] | None = None,
    route: str = "/subscribe/sse",
    **params: Any,
) -> EventStream:
    stream = EventStream.open(api.port, path(route, channels, **params), headers)
    opened.append(stream)
    assert stream.head.status == 200, (stream.head, stream.buffer)
    return stream


def message_event(event: Event) -> Json:
    """A message event: named `message`, its id the message's, its data a poll's message."""
    assert event.event == "message", event
    message: Json = event.json()
    assert set(message) == MESSAGE_FIELDS, message
    assert event.id == message["id"], event
    return message


def seen(message: Json) -> tuple[str, list[int], Any]:
    return message["id"], sorted(message["channels"]), message["data"]


# -- streaming ---------------------------------------------------------------------------


def test_the_answer_is_an_open_event_stream(
    api: ServerProcess, pub: httpx.Client, streams: list[EventStream]
) -> None:
    a = create(pub)
    stream = open_stream(api, streams, [a])
    headers = stream.head.headers
    assert headers["content-type"] == "text/event-stream"
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    assert "content-length" not in headers
    assert "transfer-encoding" not in headers
    wait_subscribers(pub, a, 1)
    sent = publish(pub, [a], {"n": 1})
    message = message_event(stream.next_event())
    assert message == {"id": sent["id"], "time": sent["time"], "channels": [a], "data": {"n": 1}}


def test_messages_come_in_order_across_channels(
    api: ServerProcess, pub: httpx.Client, streams: list[EventStream]
) -> None:
    a, b, c = create(pub), create(pub), create(pub)
    other = create(pub)
    stream = open_stream(api, streams, [a, b, c])
    wait_subscribers(pub, a, 1)
    sent = [
        publish(pub, [a], 1),
        publish(pub, [b], 2),
        publish(pub, [other], "not subscribed"),
        publish(pub, [c, a], 3),
        publish(pub, [b, other], 4),
    ]
    batch = pub.post(
        "/publish/batch",
        json={"messages": [{"channels": [c], "data": 5}, {"channels": [a, b], "data": 6}]},
    )
    assert batch.status_code == 201, batch.text
    sent += batch.json()["messages"]
    expected = [
        (sent[0]["id"], [a], 1),
        (sent[1]["id"], [b], 2),
        (sent[3]["id"], sorted([a, c]), 3),
        (sent[4]["id"], [b], 4),
        (sent[5]["id"], [c], 5),
        (sent[6]["id"], sorted([a, b]), 6),
    ]
    got = [seen(message_event(stream.next_event())) for _ in expected]
    assert got == expected
    # Still subscribed after all of that, on every channel.
    assert [subscribers(pub, channel) for channel in (a, b, c)] == [1, 1, 1]


def test_accept_event_stream_on_subscribe_streams_too(
    api: ServerProcess, pub: httpx.Client, streams: list[EventStream]
) -> None:
    a = create(pub)
    stream = open_stream(api, streams, [a], route="/subscribe")
    assert stream.head.headers["content-type"] == "text/event-stream"
    wait_subscribers(pub, a, 1)
    sent = publish(pub, [a], "x")
    assert message_event(stream.next_event())["id"] == sent["id"]


def test_cached_messages_come_first_then_live_ones(
    api: ServerProcess, pub: httpx.Client, streams: list[EventStream]
) -> None:
    a = create(pub)
    old = [publish(pub, [a], n)["id"] for n in range(3)]
    stream = open_stream(api, streams, [a])
    assert [message_event(stream.next_event())["id"] for _ in old] == old
    wait_subscribers(pub, a, 1)
    new = [publish(pub, [a], n)["id"] for n in range(3)]
    assert [message_event(stream.next_event())["id"] for _ in new] == new


@pytest.mark.parametrize("how", ["header", "lastEventId", "since"])
def test_a_reconnecting_client_resumes_exactly_after_its_last_event(
    api: ServerProcess, pub: httpx.Client, streams: list[EventStream], how: str
) -> None:
    a, b = create(pub), create(pub)
    first = open_stream(api, streams, [a, b])
    wait_subscribers(pub, a, 1)
    before = [publish(pub, [a if n % 2 else b], n)["id"] for n in range(3)]
    assert [message_event(first.next_event())["id"] for _ in before] == before
    first.close()
    wait_subscribers(pub, a, 0)
    missed = [publish(pub, [b if n % 2 else a], n)["id"] for n in range(3)]
    last = before[-1]
    if how == "header":
        # What EventSource sends; it wins over a `since` left in the URL.
        second = open_stream(api, streams, [a, b], {"Last-Event-ID": last}, since=before[0])
    elif how == "lastEventId":
        second = open_stream(api, streams, [a, b], lastEventId=last, since=before[0])
    else:
        second = open_stream(api, streams, [a, b], since=last)
    assert [message_event(second.next_event())["id"] for _ in missed] == missed
    wait_subscribers(pub, a, 1)
    live = publish(pub, [a, b], "live")["id"]
    assert message_event(second.next_event())["id"] == live


def test_pings_keep_a_quiet_stream_open_and_timeout_does_not_end_it(
    api: ServerProcess, pub: httpx.Client, streams: list[EventStream]
) -> None:
    a = create(pub)
    # `timeout` is checked as for a poll, then plays no part in a stream.
    stream = open_stream(api, streams, [a], timeout=0.05)
    stream.wait_comment("ping")
    stream.comments.clear()
    stream.wait_comment("ping")  # a second interval, long past the timeout
    assert subscribers(pub, a) == 1
    sent = publish(pub, [a], "after the pings")
    assert message_event(stream.next_event())["id"] == sent["id"]


def test_a_closed_channel_ends_the_stream_with_a_closed_event(
    api: ServerProcess, pub: httpx.Client, streams: list[EventStream]
) -> None:
    a, b = create(pub), create(pub)
    stream = open_stream(api, streams, [a, b])
    wait_subscribers(pub, a, 1)
    assert pub.delete(f"/channels/{b}").status_code == 204
    event = stream.next_event()
    assert event.event == "closed"
    assert event.id is None
    body = event.json()
    assert body["error"] == "channel_closed"
    assert body["channels"] == [b]
    stream.assert_ends()
    wait_subscribers(pub, a, 0)
    # Reconnecting, as EventSource would, gets a plain 404 that stops it.
    again = EventStream.open(api.port, path("/subscribe/sse", [a, b]))
    streams.append(again)
    assert again.head.status == 404
    assert json.loads(again.head.body)["error"] == "channel_not_found"


def test_a_past_end_sends_what_matches_then_ends(
    api: ServerProcess, pub: httpx.Client, streams: list[EventStream]
) -> None:
    a = create(pub)
    sent = publish(pub, [a], "in range")
    publish(pub, [a], "after the range")
    stream = open_stream(api, streams, [a], end=sent["time"])
    assert message_event(stream.next_event())["id"] == sent["id"]
    end = stream.next_event()
    assert end.event == "end"
    assert end.json()["cursor"].isdigit()
    stream.assert_ends()
    # Resuming after the last event finds nothing more: 204, which stops EventSource.
    again = EventStream.open(
        api.port, path("/subscribe/sse", [a], end=sent["time"]), {"Last-Event-ID": sent["id"]}
    )
    streams.append(again)
    assert again.head.status == 204
    assert subscribers(pub, a) == 0


def test_an_end_passing_while_streaming_ends_the_stream(
    api: ServerProcess, pub: httpx.Client, streams: list[EventStream]
) -> None:
    a = create(pub)
    stream = open_stream(api, streams, [a], end=time.time() + 0.5)
    end = stream.next_event()
    assert end.event == "end"
    stream.assert_ends()
    wait_subscribers(pub, a, 0)


def test_a_client_that_leaves_frees_its_subscription(
    api: ServerProcess, pub: httpx.Client, streams: list[EventStream]
) -> None:
    a = create(pub)
    stream = open_stream(api, streams, [a])
    wait_subscribers(pub, a, 1)
    stream.close()
    wait_subscribers(pub, a, 0)
    # The server goes on: publishing to the channel it left works.
    publish(pub, [a], "nobody listens")


# -- errors before the stream starts --------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "headers", "status", "code"),
    [
        ("", {}, 400, "invalid_parameter"),
        ("channels=", {}, 400, "invalid_parameter"),
        ("channels=no-such-channel", {}, 404, "channel_not_found"),
        ("channels={a}&since=abc", {}, 400, "invalid_cursor"),
        ("channels={a}&lastEventId=-1", {}, 400, "invalid_cursor"),
        ("channels={a}", {"Last-Event-ID": "x1"}, 400, "invalid_cursor"),
        ("channels={a}&timeout=31", {}, 400, "invalid_parameter"),
        ("channels={a}&start=2&end=1", {}, 400, "invalid_parameter"),
    ],
)
@pytest.mark.parametrize("route", ["/subscribe/sse", "/subscribe"])
def test_bad_requests_get_the_json_errors_of_polls(
    api: ServerProcess,
    pub: httpx.Client,
    streams: list[EventStream],
    route: str,
    query: str,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    a = create(pub)
    stream = EventStream.open(api.port, f"{route}?{query.format(a=a)}", headers)
    streams.append(stream)
    assert stream.head.status == status
    assert stream.head.headers["content-type"] == "application/json"
    body = json.loads(stream.head.body)
    assert body["error"] == code, body
    assert subscribers(pub, a) == 0


def test_only_get_is_allowed(pub: httpx.Client) -> None:
    response = pub.post("/subscribe/sse?channels=1")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


# -- servers of their own ----------------------------------------------------------------


def test_a_streaming_connection_is_never_closed_as_idle(
    server_factory: ServerFactory, streams: list[EventStream]
) -> None:
    server = server_factory("--keepalive-timeout", "0.5", "--ping-interval", "0.3")
    client = server.client()
    a = create(client)
    stream = open_stream(server, streams, [a])
    # Enough pings to span several idle sweeps (one a second) past the keep-alive timeout.
    started = time.monotonic()
    while time.monotonic() - started < 2.5:
        stream.comments.clear()
        stream.wait_comment("ping")
    assert subscribers(client, a) == 1
    sent = publish(client, [a], "still here")
    assert message_event(stream.next_event())["id"] == sent["id"]


def test_a_cache_that_dropped_wanted_messages_sends_a_gap_event_first(
    server_factory: ServerFactory, streams: list[EventStream]
) -> None:
    server = server_factory("--max-messages", "2")
    client = server.client()
    a = create(client)
    sent = [publish(client, [a], n)["id"] for n in range(3)]
    stream = open_stream(server, streams, [a])
    gap = stream.next_event()
    assert (gap.event, gap.json(), gap.id) == ("gap", {"gap": True}, None)
    assert [message_event(stream.next_event())["id"] for _ in range(2)] == sent[1:]
    # A batch larger than the cache reaches a live stream whole, with no gap event.
    wait_subscribers(client, a, 1)
    batch = client.post(
        "/publish/batch", json={"messages": [{"channels": [a], "data": n} for n in range(3)]}
    )
    assert batch.status_code == 201, batch.text
    live = [item["id"] for item in batch.json()["messages"]]
    assert [message_event(stream.next_event())["id"] for _ in live] == live


def test_a_stream_on_one_node_gets_publications_made_through_another(
    server_factory: ServerFactory, redis_url: str, streams: list[EventStream]
) -> None:
    """With the Redis engine, a stream hears of publications over the engine's events."""
    first = server_factory("--engine", redis_url)
    second = server_factory("--engine", redis_url)
    publisher = second.client()
    a, b = create(publisher), create(publisher)
    cached = publish(publisher, [a], "cached")
    stream = open_stream(first, streams, [a, b])
    assert message_event(stream.next_event())["id"] == cached["id"]
    wait_subscribers(first.client(), a, 1)
    sent = [publish(publisher, [[a, b][n % 2]], n)["id"] for n in range(4)]
    assert [message_event(stream.next_event())["id"] for _ in sent] == sent
    assert publisher.delete(f"/channels/{b}").status_code == 204
    assert stream.next_event().event == "closed"
    stream.assert_ends()

"""Every limit on real server processes, each set small by its flag: the refusal's
status and JSON body (and Retry-After where there is one), and the server serving
everyone else meanwhile."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import RedisServer, ServerFactory
from tests.helpers import ServerProcess, wait_for
from tests.integration.test_http_protocol import (
    RawResponse,
    Wire,
    assert_serves,
    new_channel,
    publish,
    request,
    subscribers,
)

KiB = 1024
MiB = 1024 * KiB

Connect = Callable[[ServerProcess], Wire]


@pytest.fixture
def connect() -> Iterator[Connect]:
    opened: list[Wire] = []

    def open_wire(server: ServerProcess) -> Wire:
        wire = Wire(server.port)
        opened.append(wire)
        return wire

    yield open_wire
    for wire in opened:
        wire.close()


def assert_limit_error(response: RawResponse, status: int, code: str) -> dict[str, Any]:
    assert response.status == status, (response.status, response.body)
    body: dict[str, Any] = response.json()
    assert body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"], body
    return body


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"], body
    return body


def health_on(wire: Wire) -> int:
    wire.send(request("GET", "/health"))
    return wire.read_response().status


# -- connections -------------------------------------------------------------------------


def test_past_max_connections_a_new_one_gets_503_and_is_closed(
    server_factory: ServerFactory, connect: Connect
) -> None:
    server = server_factory(env={"PUSHUP_MAX_CONNECTIONS": "3"})

    def hold_three() -> list[Wire] | None:
        # Until the server has seen the start-up checks' connections close, they count.
        wires = [connect(server) for _ in range(3)]
        if all(health_on(wire) == 200 for wire in wires):
            return wires
        for wire in wires:
            wire.close()
        return None

    held = wait_for(hold_three, what="three connections served")

    refused = connect(server)
    refused.send(request("GET", "/health"))
    response = refused.read_response()
    assert_limit_error(response, 503, "too_many_connections")
    assert response.header("retry-after") == "1"
    assert (response.header("connection") or "").lower() == "close"
    refused.assert_closed()

    # The connections it holds are served as before; one closed makes room.
    assert [health_on(wire) for wire in held] == [200, 200, 200]
    held.pop().close()

    def served() -> bool:
        wire = connect(server)
        try:
            return health_on(wire) == 200
        except AssertionError:  # refused still: the server has not seen the close yet
            return False
        finally:
            wire.close()

    wait_for(served, what="a connection accepted again")


# -- parked subscriptions per client address ---------------------------------------------


def test_parked_polls_and_streams_per_client_address(
    server_factory: ServerFactory, connect: Connect
) -> None:
    server = server_factory("--max-parked-per-ip", "2", "--trust-forwarded-for")
    api = server.client()
    channel = new_channel(api)

    def poll(forwarded_for: str | None, since: str = "") -> Wire:
        wire = connect(server)
        headers = [] if forwarded_for is None else [("X-Forwarded-For", forwarded_for)]
        query = f"channels={channel}&timeout=30" + (f"&since={since}" if since else "")
        wire.send(request("GET", f"/subscribe?{query}", headers=headers))
        return wire

    first = poll("203.0.113.5")
    second = poll("198.51.100.9, 203.0.113.5")  # the proxy's own entry, the last, counts
    wait_for(lambda: subscribers(api, channel) == 2, what="two polls parked")

    third = poll("203.0.113.5")
    assert_limit_error(third.read_response(), 429, "too_many_subscriptions")
    assert health_on(third) == 200  # the connection stays usable
    stream = connect(server)
    stream.send(
        request(
            "GET",
            f"/subscribe/sse?channels={channel}",
            headers=[("X-Forwarded-For", "203.0.113.5")],
        )
    )
    assert_limit_error(stream.read_response(), 429, "too_many_subscriptions")

    # Other addresses, and this host's own clients without a forwarded address, park.
    others = [poll("203.0.113.6"), poll(None)]
    wait_for(lambda: subscribers(api, channel) == 4, what="four polls parked")
    sent = publish(api, channel, "to all")
    for wire in [first, second, *others]:
        answer = wire.read_response()
        assert [m["id"] for m in answer.json()["messages"]] == [sent["id"]]

    # Answered polls no longer count; streams count while open. (A poll answered at
    # once, from the cache, is never refused: these all wait after the last message.)
    streams = []
    for _ in range(2):
        wire = connect(server)
        wire.send(
            request(
                "GET",
                f"/subscribe/sse?channels={channel}&since={sent['id']}",
                headers=[("X-Forwarded-For", "203.0.113.5")],
            )
        )
        streams.append(wire)
    wait_for(lambda: subscribers(api, channel) == 2, what="two streams open")
    refused = poll("203.0.113.5", since=sent["id"])
    assert_limit_error(refused.read_response(), 429, "too_many_subscriptions")
    streams.pop().close()
    wait_for(lambda: subscribers(api, channel) == 1, what="a stream closed")
    poll("203.0.113.5", since=sent["id"])
    wait_for(lambda: subscribers(api, channel) == 2, what="a poll parked again")
    assert_serves(server)


# -- slow requests -----------------------------------------------------------------------


def test_slow_heads_and_bodies_get_408_and_are_closed(
    server_factory: ServerFactory, connect: Connect
) -> None:
    server = server_factory("--header-timeout", "1", "--body-timeout", "1")
    api = server.client()
    channel = new_channel(api)
    idle = connect(server)
    assert health_on(idle) == 200
    parked = connect(server)
    parked.send(request("GET", f"/subscribe?channels={channel}&timeout=3"))

    began = time.monotonic()
    head = connect(server)
    head.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    body = connect(server)
    body.send(request("POST", "/publish", headers=[("Content-Length", "100")]) + b'{"chan')
    expecting = connect(server)
    expecting.send(
        request("POST", "/publish", headers=[("Content-Length", "10"), ("Expect", "100-continue")])
    )
    assert expecting.read_response().status == 100

    for wire in (head, body, expecting):
        response = wire.read_response(timeout=15.0)
        assert_limit_error(response, 408, "request_timeout")
        assert (response.header("connection") or "").lower() == "close"
        wire.assert_closed()
    assert time.monotonic() - began >= 0.9

    # A parked poll and an idle keep-alive connection are neither: both carry on.
    assert parked.read_response(timeout=15.0).json()["messages"] == []
    assert health_on(idle) == 200
    assert health_on(parked) == 200
    assert_serves(server)


# -- message size, channels per request --------------------------------------------------


def test_message_size_and_channels_per_request(server_factory: ServerFactory) -> None:
    server = server_factory("--max-message-bytes", "100", "--max-channels-per-request", "3")
    api = server.client()
    a, b, c, d = (new_channel(api) for _ in range(4))

    def data(size: int) -> str:
        return "x" * (size - 2)  # a JSON string: its quotes count

    assert api.post("/publish", json={"channels": [a], "data": data(100)}).status_code == 201
    response = api.post("/publish", json={"channels": [a], "data": data(101)})
    assert "101 bytes" in assert_error(response, 413, "message_too_large")["detail"]
    batch = {"messages": [{"channels": [a], "data": 1}, {"channels": [b], "data": data(101)}]}
    response = api.post("/publish/batch", json=batch)
    assert "messages[1]" in assert_error(response, 413, "message_too_large")["detail"]
    assert api.get(f"/channels/{a}").json()["messages"] == 1  # nothing of the batch

    response = api.post("/publish", json={"channels": [a, b, c, d], "data": 1})
    assert_error(response, 400, "too_many_channels")
    assert api.post("/publish", json={"channels": [a, b, c], "data": 1}).status_code == 201
    four = f"{a},{b},{c},{d}"
    for path in ("/subscribe", "/subscribe/sse", "/subscribe/ws"):
        response = api.get(path, params={"channels": four, "timeout": 0})
        assert_error(response, 400, "too_many_channels")
    response = api.get("/subscribe", params={"channels": f"{a},{b},{c}", "timeout": 0})
    assert response.status_code == 200
    assert len(response.json()["messages"]) == 2


# -- publish rate ------------------------------------------------------------------------


def test_publishers_past_their_rate_get_429_with_retry_after(
    server_factory: ServerFactory,
) -> None:
    # One message every 10 s after a burst of 3: the test never waits for a refill.
    server = server_factory("--publish-rate", "0.1", "--publish-burst", "3")
    api = server.client()
    channel = new_channel(api)
    for n in range(3):
        publish(api, channel, n)
    response = api.post("/publish", json={"channels": [channel], "data": 3})
    assert_error(response, 429, "rate_limited")
    assert 1 <= int(response.headers["retry-after"]) <= 10
    batch = {"messages": [{"channels": [channel], "data": 4}]}
    assert_error(api.post("/publish/batch", json=batch), 429, "rate_limited")

    # Another publisher (another address) has its own bucket; subscribers are not limited.
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=server.url, transport=transport, timeout=10.0) as other:
        assert other.post("/publish", json={"channels": [channel], "data": 5}).status_code == 201
    answer = api.get("/subscribe", params={"channels": channel, "timeout": 0}).json()
    assert [m["data"] for m in answer["messages"]] == [0, 1, 2, 5]


# -- the message cache in bytes ----------------------------------------------------------


def vm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KiB
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("engine", ["memory", "redis"])
def test_the_cache_stays_under_max_cache_bytes_and_subscribers_see_the_gap(
    server_factory: ServerFactory, request: pytest.FixtureRequest, engine: str
) -> None:
    cap = 256 * KiB
    flags = ["--max-cache-bytes", str(cap), "--max-messages", "100000", "--data-dir", "none"]
    store: RedisServer | None = None
    if engine == "redis":
        store = request.getfixturevalue("redis_server")
        flags += ["--engine", request.getfixturevalue("redis_url")]
    server = server_factory(*flags)
    api = server.client()
    channels = [new_channel(api) for _ in range(4)]
    first = publish(api, channels[0], "first")

    def used() -> int:
        if store is None:
            return vm_rss(server.proc.pid)
        with store.client() as client:
            return int(client.info("memory")["used_memory"])

    before = used()
    payload = "y" * 4000
    for _ in range(40):  # 32 MB in all, 800 KB a call
        items = [{"channels": [channels[i % 4]], "data": payload} for i in range(200)]
        assert api.post("/publish/batch", json={"messages": items}).status_code == 201
    grown = used() - before
    assert grown < 16 * MiB, f"grew by {grown} bytes while the cache holds {cap}"

    cached = sum(api.get(f"/channels/{c}").json()["messages"] for c in channels)
    assert 0 < cached * 4002 <= cap
    if store is not None:
        with store.client() as client:
            assert int(client.get("pushup:cache:bytes") or 0) <= cap
    # Whoever wanted the dropped messages is told.
    since_first = {"channels": ",".join(map(str, channels)), "since": first["id"], "timeout": 0}
    answer = api.get("/subscribe", params=since_first).json()
    assert answer["gap"] is True
    assert len(answer["messages"]) == cached
    latest = answer["cursor"]
    assert api.get("/subscribe", params={**since_first, "since": latest}).json()["gap"] is False


# -- the command line --------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        ["--max-connections", "0"],
        ["--max-parked-per-ip", "-1"],
        ["--header-timeout", "0"],
        ["--publish-rate", "-1"],
        ["--max-cache-bytes", "10"],
        ["--max-channels-per-request", "0"],
    ],
)
def test_bad_limits_are_usage_errors(flags: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pushup", "serve", *flags],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result
    assert flags[0].encode() in result.stderr

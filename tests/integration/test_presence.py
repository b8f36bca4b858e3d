"""Presence (`GET /channels/{id}/presence`), on every engine: a channel's parked polls and
open streams, and the distinct subscribers among them by their token's `sub` claim,
readable by the publisher and by a subscriber whose token grants the channel; on a
shared engine, over every node, a node that dies dropping out."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import websockets.sync.client

from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, wait_for
from tests.integration.test_sse import EventStream
from tests.integration.test_subscriber_api import assert_error
from tests.integration.test_tokens import SECRET, mint

KEY = "presence-publisher-key"
PUBLISHER = {"Authorization": f"Bearer {KEY}"}
Json = dict[str, Any]
CHANNELS = frozenset({"channels"})


@pytest.fixture(params=["memory", "journal", "redis", "nats"])
def engine_flags(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """Each engine in turn: memory without and with its journal, Redis, NATS."""
    if request.param == "memory":
        return ("--data-dir", "none")
    if request.param == "journal":
        return ()  # the test helper gives it a data directory of its own
    return ("--engine", str(request.getfixturevalue(f"{request.param}_url")))


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(8) as threads:
        yield threads


def make_channel(node: ServerProcess, name: str) -> int:
    made = node.client(headers=PUBLISHER).post("/channels", json={"name": name})
    assert made.status_code == 201, made.text
    channel_id: int = made.json()["id"]
    return channel_id


def park(
    pool: ThreadPoolExecutor, node: ServerProcess, channel: int, token: str | None
) -> Future[httpx.Response]:
    """A long poll held open on `channel` (until the test publishes or it times out)."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    client = node.client(headers=headers)
    return pool.submit(client.get, "/subscribe", params={"channels": channel, "timeout": 30})


def presence(node: ServerProcess, channel: int | str, **headers: str) -> Json:
    answer = node.client(headers=headers or PUBLISHER).get(f"/channels/{channel}/presence")
    assert answer.status_code == 200, answer.text
    body: Json = answer.json()
    return body


def shows(node: ServerProcess, channel: int, connections: int) -> Json | None:
    found = presence(node, channel)
    return found if found["connections"] == connections else None


def test_polls_and_streams_and_their_distinct_subs(
    server_factory: ServerFactory, engine_flags: tuple[str, ...], pool: ThreadPoolExecutor
) -> None:
    node = server_factory(*engine_flags, "--publisher-key", KEY, "--subscriber-secret", SECRET)
    room = make_channel(node, "room")
    alice, bob = mint([room], sub="alice"), mint(["room"], sub="bob")
    anonymous = mint([room])
    empty = presence(node, room)
    assert {k: empty[k] for k in ("connections", "sub_count", "subs")} == {
        "connections": 0,
        "sub_count": 0,
        "subs": [],
    }
    polls = [park(pool, node, room, alice), park(pool, node, room, anonymous)]
    sse = EventStream.open(node.port, f"/subscribe/sse?channels={room}&token={alice}")
    ws_url = f"ws://127.0.0.1:{node.port}/subscribe/ws?channels=room&token={bob}"
    with contextlib.closing(sse), websockets.sync.client.connect(ws_url, open_timeout=20):
        found = wait_for(lambda: shows(node, room, 4), what="four on the channel")
        assert (found["polls"], found["streams"], found["anonymous"]) == (2, 2, 1)
        # Alice has a poll and a stream open: one subscriber.
        assert (found["subs"], found["sub_count"], found["subs_complete"]) == (
            ["alice", "bob"],
            2,
            True,
        )
        assert (found["id"], found["name"]) == (room, "room")
        # By name too, and by a subscriber whose token grants the channel.
        assert presence(node, "room")["connections"] == 4
        as_bob = presence(node, room, Authorization=f"Bearer {bob}")
        assert as_bob["subs"] == ["alice", "bob"]
    wait_for(lambda: shows(node, room, 2), what="the streams gone")
    published = node.client(headers=PUBLISHER).post(
        "/publish", json={"channels": [room], "data": 1}
    )
    assert published.status_code == 201
    for poll in polls:
        assert poll.result(timeout=30).status_code == 200
    assert wait_for(lambda: shows(node, room, 0), what="the polls answered")["subs"] == []


def test_who_may_read_it(server_factory: ServerFactory) -> None:
    node = server_factory(
        "--data-dir", "none", "--publisher-key", KEY, "--subscriber-secret", SECRET
    )
    room, other = make_channel(node, "a"), make_channel(node, "b")
    client = node.client()
    path = f"/channels/{room}/presence"
    assert_error(client.get(path), 401, "unauthorized")
    assert_error(client.get(path, headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
    refused = client.get(path, headers={"Authorization": f"Bearer {mint([other])}"})
    assert assert_error(refused, 403, "forbidden", extra=CHANNELS)["channels"] == [room]
    # The token may come in the query, as EventSource's does.
    assert client.get(path, params={"token": mint(["a"])}).status_code == 200
    assert_error(
        client.get("/channels/404404/presence", headers=PUBLISHER),
        404,
        "channel_not_found",
        extra=CHANNELS,
    )
    assert_error(client.get("/channels/a,b/presence", headers=PUBLISHER), 400, "invalid_parameter")


def test_without_tokens_every_subscriber_may_read_it_and_all_are_anonymous(
    server_factory: ServerFactory, pool: ThreadPoolExecutor
) -> None:
    node = server_factory("--data-dir", "none", "--publisher-key", KEY)
    room = make_channel(node, "open")
    park(pool, node, room, None)
    found = wait_for(lambda: shows(node, room, 1), what="the poll parked")
    assert (found["anonymous"], found["subs"]) == (1, [])
    # No key: an anonymous reader, as a subscriber of the open channel.
    assert node.client().get(f"/channels/{room}/presence").json()["connections"] == 1
    assert "nodes" not in found


@pytest.mark.parametrize("engine", ["redis", "nats"])
def test_two_nodes_count_each_other_and_a_dead_node_drops_out(
    server_factory: ServerFactory,
    request: pytest.FixtureRequest,
    pool: ThreadPoolExecutor,
    engine: str,
) -> None:
    url = str(request.getfixturevalue(f"{engine}_url"))
    flags = ("--engine", url, "--publisher-key", KEY, "--subscriber-secret", SECRET)
    first, second = server_factory(*flags), server_factory(*flags)
    room = make_channel(first, "shared")
    park(pool, first, room, mint([room], sub="alice"))
    park(pool, second, room, mint([room], sub="alice"))
    park(pool, second, room, mint([room], sub="carol"))
    park(pool, second, room, mint([room]))
    for node in (first, second):
        found = wait_for(lambda node=node: shows(node, room, 4), what="both nodes counted")
        assert found["nodes"] == {"live": 2, "counted": 2}
        assert (found["subs"], found["sub_count"], found["anonymous"]) == (
            ["alice", "carol"],
            2,
            1,
        )
    second.proc.send_signal(signal.SIGKILL)
    second.proc.wait()
    # Its heartbeats stop: once it is no longer live, only the first node's poll is left.
    gone = wait_for(
        lambda: (f := presence(first, room))["nodes"]["live"] == 1 and f, what="the dead node"
    )
    assert (gone["connections"], gone["subs"], gone["nodes"]["counted"]) == (1, ["alice"], 1)

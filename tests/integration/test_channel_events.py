"""Channel events (`--channel-events`), on every engine: a channel created, closed or
expired is a publication on `$events`, which only the publisher reads (`GET
/subscribe/events`), once per event over every node of a shared engine."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pushup.client import AsyncPublisher, Unauthorized, channel_events
from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, wait_for
from tests.integration.test_subscriber_api import assert_error
from tests.integration.test_tokens import SECRET, mint

KEY = "channel-events-key"
PUBLISHER = {"Authorization": f"Bearer {KEY}"}
CHANNELS = frozenset({"channels"})
Json = dict[str, Any]


@pytest.fixture(params=["memory", "journal", "redis", "nats"])
def engine_flags(request: pytest.FixtureRequest) -> tuple[str, ...]:
    if request.param == "memory":
        return ("--data-dir", "none")
    if request.param == "journal":
        return ()
    return ("--engine", str(request.getfixturevalue(f"{request.param}_url")))


def events(node: ServerProcess, since: str | None = None) -> tuple[list[Json], str]:
    params = {"timeout": 0} if since is None else {"timeout": 0, "since": since}
    answer = node.client(headers=PUBLISHER).get("/subscribe/events", params=params)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return [message["data"] for message in body["messages"]], body["cursor"]


def kinds(found: list[Json]) -> list[tuple[str, str | None]]:
    return [(event["event"], event["name"]) for event in found]


def test_created_closed_and_expired_in_order(
    server_factory: ServerFactory, engine_flags: tuple[str, ...]
) -> None:
    node = server_factory(*engine_flags, "--publisher-key", KEY, "--channel-events")
    client = node.client(headers=PUBLISHER)
    _, cursor = events(node)
    room = client.post("/channels", json={"name": "room"}).json()["id"]
    short = client.post("/channels", json={"name": "short", "ttl": 0.5}).json()["id"]
    assert client.delete("/channels/room").status_code == 204
    found = wait_for(
        lambda: f if len(f := events(node, cursor)[0]) == 4 else None,
        what="created twice, closed, expired",
    )
    assert kinds(found) == [
        ("created", "room"),
        ("created", "short"),
        ("closed", "room"),
        ("expired", "short"),
    ]
    assert [event["channel"] for event in found] == [room, short, room, short]
    assert all(abs(event["at"] - time.time()) < 60 for event in found)


def test_only_the_publisher_reads_them_and_no_one_writes_them(
    server_factory: ServerFactory,
) -> None:
    node = server_factory(
        "--data-dir",
        "none",
        "--publisher-key",
        KEY,
        "--subscriber-secret",
        SECRET,
        "--channel-events",
    )
    publisher, anyone = node.client(headers=PUBLISHER), node.client()
    events_id = publisher.get("/channels/$events").json()["id"]
    assert_error(anyone.get("/subscribe/events"), 401, "unauthorized")
    token = {"Authorization": f"Bearer {mint(['$events', events_id])}"}
    for ref in ("$events", events_id):
        refused = anyone.get("/subscribe", params={"channels": ref, "timeout": 0}, headers=token)
        assert_error(refused, 403, "forbidden", extra=CHANNELS)
        # Not even with the publisher's key: its way in is /subscribe/events.
        refused = publisher.get("/subscribe", params={"channels": ref, "timeout": 0})
        assert_error(refused, 401, "unauthorized")
        published = publisher.post("/publish", json={"channels": [ref], "data": 1})
        assert_error(published, 403, "forbidden", extra=CHANNELS)
        # An Idempotency-Key takes another way to the engine: refused all the same.
        once = {"Idempotency-Key": f"into-{ref}"}
        published = publisher.post("/publish", json={"channels": [ref], "data": 1}, headers=once)
        assert_error(published, 403, "forbidden", extra=CHANNELS)
        batch = {"messages": [{"channels": [ref], "data": 1}]}
        published = publisher.post("/publish/batch", json=batch, headers=once)
        assert_error(published, 403, "forbidden", extra=CHANNELS)
        assert_error(publisher.delete(f"/channels/{ref}"), 403, "forbidden", extra=CHANNELS)
    made = publisher.post("/channels", json={"name": "$mine"})
    assert "reserved" in assert_error(made, 400, "invalid_body")["detail"]


def test_off_by_default(server: ServerProcess) -> None:
    client = server.client()
    assert client.post("/channels", json={"name": "quiet"}).status_code == 201
    off = client.get("/subscribe/events", params={"timeout": 0})
    assert "--channel-events" in assert_error(off, 404, "not_found")["detail"]
    assert_error(client.post("/channels", json={"name": "$events"}), 400, "invalid_body")


@pytest.mark.parametrize("engine", ["redis", "nats"])
def test_two_nodes_tell_each_expiry_once(
    server_factory: ServerFactory, request: pytest.FixtureRequest, engine: str
) -> None:
    """Both nodes sweep, and each poll expires what is due: the node whose operation
    removed a channel publishes its event, and the other does not."""
    url = str(request.getfixturevalue(f"{engine}_url"))
    flags = ("--engine", url, "--publisher-key", KEY, "--channel-events")
    first, second = server_factory(*flags), server_factory(*flags)
    _, cursor = events(first)
    names = [f"brief-{n}" for n in range(8)]
    for n, name in enumerate(names):
        node = (first, second)[n % 2]
        made = node.client(headers=PUBLISHER).post("/channels", json={"name": name, "ttl": 1})
        assert made.status_code == 201, made.text
    closing = second.client(headers=PUBLISHER).post("/channels", json={"name": "closing"})
    assert second.client(headers=PUBLISHER).delete("/channels/closing").status_code == 204
    assert closing.status_code == 201

    def everything() -> list[Json] | None:
        # Read on both nodes, and poll on both, so both find the channels due.
        for node in (first, second):
            node.client().get("/subscribe", params={"channels": "nothing", "timeout": 0})
        found, _ = events(second, cursor)
        return found if sum(e["event"] == "expired" for e in found) >= len(names) else None

    wait_for(everything, timeout=20, what="every expiry told")
    # Both sweep on: no second telling comes later.
    time.sleep(1.0)
    found, _ = events(first, cursor)
    assert sorted(kinds(found)) == sorted(
        [("created", name) for name in [*names, "closing"]]
        + [("expired", name) for name in names]
        + [("closed", "closing")]
    )


async def test_the_python_client_follows_them(server_factory: ServerFactory) -> None:
    node = server_factory("--data-dir", "none", "--publisher-key", KEY, "--channel-events")
    async with AsyncPublisher(node.url, key=KEY) as publisher:
        made = await publisher.create_channel("followed")
        await publisher.close_channel("followed")
    seen = []
    async with channel_events(node.url, KEY, timeout=5) as followed:
        async for event in followed:
            seen.append((event.event, event.channel, event.name))
            if len(seen) == 2:
                break
        assert followed.cursor is not None
    assert seen == [("created", made.id, "followed"), ("closed", made.id, "followed")]
    # A wrong key is refused at once, not retried.
    with pytest.raises(Unauthorized):
        async with channel_events(node.url, "wrong", timeout=1) as refused:
            await anext(refused)

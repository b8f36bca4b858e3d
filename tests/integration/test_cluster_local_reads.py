"""Two PushUp nodes on one Redis, where a node answers re-polls it can vouch for without
asking Redis (`engines/redis/known.py`): closes, expiries, names made again and
publications through the other node must all still reach its subscribers."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.helpers import wait_for

Json = dict[str, Any]
DEADLINE_S = 15.0
LONG_POLL_S = 50


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=4)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


@pytest.fixture
def nodes(server_factory: ServerFactory, redis_url: str) -> list[httpx.Client]:
    return [server_factory("--engine", redis_url).client() for _ in range(2)]


def now(client: httpx.Client, ref: int | str) -> str:
    """A poll that waits for nothing: the node resolves (and learns) the channel."""
    response = client.get("/subscribe", params={"channels": ref, "timeout": 0})
    assert response.status_code == 200, response.text
    cursor: str = response.json()["cursor"]
    return cursor


def park(
    pool: ThreadPoolExecutor, client: httpx.Client, ref: int | str, since: str
) -> Future[httpx.Response]:
    params = {"channels": ref, "since": since, "timeout": LONG_POLL_S}
    return pool.submit(client.get, "/subscribe", params=params, timeout=LONG_POLL_S + 30)


def parked_on(client: httpx.Client, channel: int, count: int) -> None:
    wait_for(
        lambda: client.get(f"/channels/{channel}").json()["local_subscribers"] == count,
        timeout=DEADLINE_S,
        what=f"{count} poll(s) parked",
    )


def publish(client: httpx.Client, ref: int | str, data: object) -> Json:
    response = client.post("/publish", json={"channels": [ref], "data": data})
    assert response.status_code == 201, response.text
    body: Json = response.json()
    return body


@pytest.mark.parametrize("ref_kind", ["id", "name"])
def test_a_channel_closed_through_another_node_is_gone_on_this_one(
    nodes: list[httpx.Client], pool: ThreadPoolExecutor, ref_kind: str
) -> None:
    a, b = nodes
    channel = a.post("/channels", json={"name": "closing"}).json()["id"]
    ref = channel if ref_kind == "id" else "closing"
    cursor = now(b, ref)
    polls = [park(pool, b, ref, cursor) for _ in range(2)]
    parked_on(b, channel, 2)
    assert a.delete(f"/channels/{channel}").status_code == 204
    for poll in polls:
        response = poll.result(timeout=DEADLINE_S)
        assert response.status_code == 410, response.text
        assert response.json()["channels"] == [channel]
    # B heard the close: a re-poll with the same cursor is not parked but refused.
    again = b.get("/subscribe", params={"channels": ref, "since": cursor, "timeout": 5})
    assert again.status_code == 404, again.text
    assert again.json()["error"] == "channel_not_found"


def test_a_channel_that_expired_is_gone_on_every_node(
    nodes: list[httpx.Client], pool: ThreadPoolExecutor
) -> None:
    """Whichever node's sweep finds it due, B hears the expiry as an event."""
    a, b = nodes
    channel = a.post("/channels", json={"ttl": 3}).json()["id"]
    cursor = now(b, channel)
    poll = park(pool, b, channel, cursor)
    response = poll.result(timeout=DEADLINE_S)
    assert response.status_code == 410, response.text
    again = b.get("/subscribe", params={"channels": channel, "since": cursor, "timeout": 5})
    assert again.status_code == 404, again.text


def test_publications_through_one_node_reach_polls_reparked_on_the_other(
    nodes: list[httpx.Client], pool: ThreadPoolExecutor
) -> None:
    """Each answer is followed at once by a re-poll and the next publication, racing:
    the re-poll is parked at the node's high water (no Redis read) or reads Redis,
    and gets the next message either way. Subscribers switch nodes now and then, as
    behind a balancer, with a cursor the other node may not have reached."""
    a, b = nodes
    channel = a.post("/channels", json={"name": "race"}).json()["id"]
    cursor = now(b, "race")
    received: list[str] = []
    published: list[str] = []
    for round_ in range(30):
        subscriber = b if round_ % 5 else a
        publisher = a if subscriber is b else b
        poll = park(pool, subscriber, "race", cursor)
        published.append(publish(publisher, channel, round_)["id"])
        response = poll.result(timeout=DEADLINE_S)
        assert response.status_code == 200, response.text
        body = response.json()
        assert int(body["cursor"]) >= int(cursor), "the cursor went back"
        received.extend(message["id"] for message in body["messages"])
        cursor = body["cursor"]
        # A poll answered before the message can come empty (not here: 50 s), never
        # without it when it names a cursor at or past it.
        if received[-1:] != published[-1:]:
            pytest.fail(f"round {round_}: got {body} after publishing {published[-1]}")
    assert received == published


def test_a_name_made_again_through_another_node_is_the_new_channel(
    nodes: list[httpx.Client], pool: ThreadPoolExecutor
) -> None:
    a, b = nodes
    first = a.post("/channels", json={"name": "room"}).json()["id"]
    cursor = now(b, "room")
    poll = park(pool, b, "room", cursor)
    parked_on(b, first, 1)
    assert a.delete(f"/channels/{first}").status_code == 204
    assert poll.result(timeout=DEADLINE_S).status_code == 410
    second = a.post("/channels", json={"name": "room"}).json()["id"]
    assert second != first
    poll = park(pool, b, "room", cursor)
    parked_on(b, second, 1)
    message = publish(a, "room", "in the new room")
    response = poll.result(timeout=DEADLINE_S)
    assert response.status_code == 200, response.text
    (got,) = response.json()["messages"]
    assert (got["id"], got["channels"], got["data"]) == (message["id"], [second], "in the new room")

"""Expiry of messages and channels, `gap` on dropped messages, and closing channels.

TTLs are short, but nothing here depends on speed: states are awaited with generous
deadlines, and an assertion that needs "still within the TTL" is only made when the
clock shows it still is.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx

from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, wait_for

# Longer than any test here takes: a poll that parks instead of answering at once ends
# by the client's deadline (CLIENT_TIMEOUT_S, as for `server.client()`) and fails the test.
LONG_POLL_S = 100
CLIENT_TIMEOUT_S = 30.0
EXPIRY_DEADLINE_S = 15.0


def _channel_gone(client: httpx.Client, channel: int) -> Callable[[], bool]:
    return lambda: client.get(f"/channels/{channel}").status_code == 404


def _poll(client: httpx.Client, channels: str, **params: Any) -> dict[str, Any]:
    response = client.get("/subscribe", params={"channels": channels, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _publish(client: httpx.Client, channel: int | str, data: Any) -> dict[str, Any]:
    response = client.post("/publish", json={"channels": [channel], "data": data})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _ids(body: dict[str, Any]) -> list[str]:
    return [message["id"] for message in body["messages"]]


async def _eventually(probe: Callable[[], object], *, timeout: float, what: str) -> None:
    """`wait_for` off the event loop, so parked requests keep being served meanwhile."""
    await asyncio.to_thread(wait_for, probe, timeout=timeout, what=what)


def _session(server: ServerProcess) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        server.url,
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S),
    )


async def _parked_poll(session: aiohttp.ClientSession, channels: str) -> tuple[int, Any]:
    params = {"channels": channels, "timeout": str(LONG_POLL_S)}
    async with session.get("/subscribe", params=params) as resp:
        return resp.status, await resp.json()


def _subscribers(client: httpx.Client, channel: int, count: int) -> Callable[[], bool]:
    return lambda: client.get(f"/channels/{channel}").json()["subscribers"] == count


# -- messages ---------------------------------------------------------------------------


def test_messages_expire_from_the_cache_by_themselves(server_factory: ServerFactory) -> None:
    server = server_factory("--message-ttl", "1")
    client = server.client()
    channel = client.post("/channels").json()["id"]
    published = [_publish(client, channel, n) for n in range(3)]
    info = client.get(f"/channels/{channel}").json()
    if time.time() < published[0]["time"] + 1:
        assert info["messages"] == 3, info
    # No subscriber asks for anything: the server drops them on its own.
    wait_for(
        lambda: client.get(f"/channels/{channel}").json()["messages"] == 0,
        timeout=EXPIRY_DEADLINE_S,
        what="the cached messages to expire",
    )
    info = client.get(f"/channels/{channel}").json()
    assert info["last_message_id"] == published[-1]["id"]
    # A poll without a cursor would have returned them: it learns they are gone.
    body = _poll(client, str(channel), timeout=0)
    assert body["messages"] == []
    assert body["gap"] is True


def test_gap_when_since_is_older_than_messages_dropped_by_ttl(
    server_factory: ServerFactory,
) -> None:
    ttl = 0.5
    server = server_factory("--message-ttl", str(ttl))
    client = server.client()
    channel = client.post("/channels").json()["id"]
    before = _poll(client, str(channel), timeout=0)
    assert before["messages"] == [] and before["gap"] is False
    old_cursor = before["cursor"]
    first = _publish(client, channel, "first")
    wait_for(
        lambda: client.get(f"/channels/{channel}").json()["messages"] == 0,
        timeout=EXPIRY_DEADLINE_S,
        what="the message to expire",
    )

    # Sent at once although empty and asked to wait LONG_POLL_S: the client must know.
    body = _poll(client, str(channel), since=old_cursor, timeout=LONG_POLL_S)
    assert body["messages"] == []
    assert body["gap"] is True
    # Its cursor is past the loss: polling on from it reports no gap.
    again = _poll(client, str(channel), since=body["cursor"], timeout=0)
    assert again == {"messages": [], "cursor": again["cursor"], "gap": False}
    # A cursor at the dropped message itself lost nothing either.
    assert _poll(client, str(channel), since=first["id"], timeout=0)["gap"] is False

    second = _publish(client, channel, "second")
    body = _poll(client, str(channel), since=old_cursor, timeout=0)
    answered = time.time()
    assert body["gap"] is True
    assert set(_ids(body)) <= {second["id"]}
    if answered < second["time"] + ttl:
        assert _ids(body) == [second["id"]]


def test_gap_on_eviction_by_count(server_factory: ServerFactory) -> None:
    server = server_factory("--max-messages", "3")
    client = server.client()
    channel = client.post("/channels").json()["id"]
    old_cursor = _poll(client, str(channel), timeout=0)["cursor"]
    ids = [_publish(client, channel, n)["id"] for n in range(5)]
    assert client.get(f"/channels/{channel}").json()["messages"] == 3

    for params in ({"since": old_cursor}, {}):
        body = _poll(client, str(channel), timeout=0, **params)
        assert _ids(body) == ids[2:], params
        assert [m["data"] for m in body["messages"]] == [2, 3, 4]
        assert body["gap"] is True, params
        assert body["cursor"] == ids[-1]
    # Nothing after the newest dropped message was lost.
    body = _poll(client, str(channel), since=ids[1], timeout=0)
    assert _ids(body) == ids[2:]
    assert body["gap"] is False
    # Re-polling with the returned cursor: no gap, and it waits (LONG_POLL_S) for news.
    again = _poll(client, str(channel), since=ids[-1], timeout=0)
    assert again["messages"] == [] and again["gap"] is False
    answers: list[dict[str, Any]] = []

    def subscribe() -> None:
        subscriber = server.client()
        answers.append(_poll(subscriber, str(channel), since=ids[-1], timeout=LONG_POLL_S))

    thread = threading.Thread(target=subscribe)
    thread.start()
    wait_for(_subscribers(client, channel, 1), what="a parked subscriber")
    # This publication evicts one more old message, which the subscriber already had.
    sixth = _publish(client, channel, 5)
    thread.join(timeout=CLIENT_TIMEOUT_S + 5)
    (answer,) = answers
    assert _ids(answer) == [sixth["id"]]
    assert answer["gap"] is False


# -- channels ---------------------------------------------------------------------------


def test_idle_channel_expires_by_itself(server_factory: ServerFactory) -> None:
    server = server_factory("--channel-ttl", "1")
    client = server.client()
    named = client.post("/channels", json={"name": "tag:short"}).json()
    anonymous = client.post("/channels").json()
    assert named["expires_at"] > time.time() - 5
    wait_for(
        _channel_gone(client, anonymous["id"]),
        timeout=EXPIRY_DEADLINE_S,
        what="the anonymous channel to expire",
    )
    wait_for(
        _channel_gone(client, named["id"]),
        timeout=EXPIRY_DEADLINE_S,
        what="the named channel to expire",
    )
    assert client.get("/channels/tag%3Ashort").status_code == 404
    assert client.post(f"/channels/{named['id']}/renew").status_code == 404
    published = client.post("/publish", json={"channels": [anonymous["id"]], "data": 1})
    assert published.status_code == 404, published.text
    polled = client.get("/subscribe", params={"channels": "tag:short", "timeout": 0})
    assert polled.status_code == 404, polled.text
    assert polled.json()["channels"] == ["tag:short"]
    # The name is free again; the id is not reused.
    reborn = client.post("/channels", json={"name": "tag:short"})
    assert reborn.status_code == 201, reborn.text
    assert reborn.json()["id"] not in (named["id"], anonymous["id"])
    assert client.get(f"/channels/{named['id']}").status_code == 404


async def test_expiring_channel_answers_its_parked_subscribers(server: ServerProcess) -> None:
    client = server.client()
    expiring = client.post("/channels", json={"name": "soon:gone", "ttl": 600}).json()["id"]
    lasting = client.post("/channels", json={"ttl": 600}).json()["id"]
    async with _session(server) as session:
        alone = asyncio.create_task(_parked_poll(session, "soon:gone"))
        both = asyncio.create_task(_parked_poll(session, f"{lasting},soon:gone"))
        await _eventually(
            _subscribers(client, expiring, 2), timeout=30, what="two parked subscribers"
        )
        # From now on a short TTL, and no further activity: it expires by itself, and
        # nothing but the server's own clock answers the parked polls.
        renewed = client.post(f"/channels/{expiring}/renew", json={"ttl": 0.5})
        assert renewed.status_code == 200, renewed.text
        async with asyncio.timeout(CLIENT_TIMEOUT_S):
            answers = await asyncio.gather(alone, both)
    for status, body in answers:
        assert status == 410, body
        assert body["error"] == "channel_closed"
        assert isinstance(body["detail"], str) and body["detail"]
        assert body["channels"] == [expiring]
    assert client.get(f"/channels/{expiring}").status_code == 404
    info = client.get(f"/channels/{lasting}").json()
    assert info["subscribers"] == 0


def test_activity_keeps_a_channel_alive(server_factory: ServerFactory) -> None:
    ttl = 2.0
    server = server_factory("--channel-ttl", str(ttl))
    client = server.client()
    idle = client.post("/channels").json()
    active = client.post("/channels").json()
    original = active["expires_at"]
    deadline = time.monotonic() + EXPIRY_DEADLINE_S
    last_expiry = original
    rounds = 0
    # Keep the channel busy (publish, renew, in turn) until the idle twin is gone and
    # the active one's original TTL is well past.
    while client.get(f"/channels/{idle['id']}").status_code != 404 or time.time() < original + ttl:
        assert time.monotonic() < deadline, "the idle channel never expired"
        if rounds % 2:
            renewed = client.post(f"/channels/{active['id']}/renew")
            assert renewed.status_code == 200, renewed.text
            expiry = renewed.json()["expires_at"]
        else:
            _publish(client, active["id"], rounds)
            info = client.get(f"/channels/{active['id']}")
            assert info.status_code == 200, info.text
            expiry = info.json()["expires_at"]
        assert expiry >= last_expiry
        last_expiry = expiry
        rounds += 1
        time.sleep(0.1)  # the pace of the activity, part of the workload
    info = client.get(f"/channels/{active['id']}")
    assert info.status_code == 200, info.text
    assert info.json()["expires_at"] > original
    # Left alone, it expires too.
    wait_for(
        _channel_gone(client, active["id"]),
        timeout=EXPIRY_DEADLINE_S,
        what="the active channel to expire once idle",
    )


async def test_delete_wakes_parked_subscribers_at_once(server: ServerProcess) -> None:
    client = server.client()
    closing = client.post("/channels", json={"name": "room:a"}).json()["id"]
    staying = client.post("/channels").json()["id"]
    async with _session(server) as session:
        alone = asyncio.create_task(_parked_poll(session, "room:a"))
        both = asyncio.create_task(_parked_poll(session, f"room:a,{staying}"))
        other = asyncio.create_task(_parked_poll(session, str(staying)))
        try:
            await _eventually(
                lambda: _subscribers(client, closing, 2)() and _subscribers(client, staying, 2)(),
                timeout=30,
                what="three parked subscribers",
            )
            deleted = client.delete(f"/channels/{closing}")
            assert deleted.status_code == 204, deleted.text
            assert deleted.content == b""
            async with asyncio.timeout(CLIENT_TIMEOUT_S):
                answers = await asyncio.gather(alone, both)
            for status, body in answers:
                assert status == 410, body
                assert body["error"] == "channel_closed"
                # Only the closed channel is listed, as an id, though it was named.
                assert body["channels"] == [closing]
            # The subscriber of the other channel alone is still parked, and still served.
            await _eventually(
                _subscribers(client, staying, 1), timeout=30, what="one parked subscriber"
            )
            assert not other.done()
            message = _publish(client, staying, "still here")
            async with asyncio.timeout(CLIENT_TIMEOUT_S):
                status, body = await other
            assert status == 200, body
            assert _ids(body) == [message["id"]]
        finally:
            for task in (alone, both, other):
                task.cancel()
            await asyncio.gather(alone, both, other, return_exceptions=True)
    assert client.get(f"/channels/{closing}").status_code == 404
    assert client.get("/channels/room%3Aa").status_code == 404
    polled = client.get("/subscribe", params={"channels": f"room:a,{staying}", "timeout": 0})
    assert polled.status_code == 404, polled.text
    assert polled.json()["channels"] == ["room:a"]
    assert client.post("/channels", json={"name": "room:a"}).status_code == 201

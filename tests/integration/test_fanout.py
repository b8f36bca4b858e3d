"""Fan-out: one publication reaches every parked subscriber, in one response each."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx

from tests.helpers import ServerProcess, wait_for

N_SUBSCRIBERS = 2000
# Longer than any of these tests can take, so a parked poll never ends by its timeout.
POLL_TIMEOUT_S = 100


async def _eventually(probe: Callable[[], object], *, timeout: float, what: str) -> None:
    """`wait_for` off the event loop, so parked requests keep being served meanwhile."""
    await asyncio.to_thread(wait_for, probe, timeout=timeout, what=what)


def _subscribers_are(client: httpx.Client, channel: int, count: int) -> Callable[[], bool]:
    def probe() -> bool:
        return bool(client.get(f"/channels/{channel}").json()["subscribers"] == count)

    return probe


async def _poll(
    session: aiohttp.ClientSession, channel: int, since: str | None = None
) -> dict[str, Any]:
    params = {"channels": str(channel), "timeout": str(POLL_TIMEOUT_S)}
    if since is not None:
        params["since"] = since
    async with session.get("/subscribe", params=params) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


def _session(server: ServerProcess) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        server.url,
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=90),
    )


async def _fan_out_round(
    session: aiohttp.ClientSession,
    client: httpx.Client,
    channel: int,
    cursors: list[str | None],
    data: Any,
) -> list[str]:
    """Park one poll per cursor, publish once, check that every poll got just that."""
    polls = [asyncio.create_task(_poll(session, channel, since)) for since in cursors]
    try:
        await _eventually(
            _subscribers_are(client, channel, len(cursors)),
            timeout=60,
            what=f"{len(cursors)} parked subscribers",
        )
        assert not any(poll.done() for poll in polls), "a poll ended before the publication"
        published = client.post("/publish", json={"channels": [channel], "data": data})
        assert published.status_code == 201, published.text
        async with asyncio.timeout(60):
            answers = await asyncio.gather(*polls)
    finally:
        for poll in polls:
            poll.cancel()
        await asyncio.gather(*polls, return_exceptions=True)
    expected = {
        "id": published.json()["id"],
        "time": published.json()["time"],
        "channels": [channel],
        "data": data,
    }
    wrong = [answer for answer in answers if answer["messages"] != [expected]]
    assert not wrong, f"{len(wrong)} of {len(answers)} got something else, e.g. {wrong[0]}"
    assert all(answer["cursor"] == expected["id"] for answer in answers)
    assert all(answer["gap"] is False for answer in answers)
    assert client.get(f"/channels/{channel}").json()["subscribers"] == 0
    return [answer["cursor"] for answer in answers]


async def test_publication_reaches_2000_parked_subscribers(server: ServerProcess) -> None:
    client = server.client()
    channel = client.post("/channels").json()["id"]
    async with _session(server) as session:
        cursors = await _fan_out_round(
            session, client, channel, [None] * N_SUBSCRIBERS, {"round": 1}
        )
        # Everyone comes back with its cursor: only the second message is new to them.
        await _fan_out_round(session, client, channel, list(cursors), {"round": 2})


async def test_batch_reaches_parked_subscriber_in_one_response(server: ServerProcess) -> None:
    client = server.client()
    channel = client.post("/channels").json()["id"]
    other = client.post("/channels").json()["id"]
    async with _session(server) as session:
        poll = asyncio.create_task(_poll(session, channel))
        try:
            await _eventually(
                _subscribers_are(client, channel, 1), timeout=30, what="a parked subscriber"
            )
            batch = client.post(
                "/publish/batch",
                json={
                    "messages": [
                        {"channels": [channel], "data": "first"},
                        {"channels": [channel, other], "data": {"second": [2]}},
                        {"channels": [channel], "data": 3},
                    ]
                },
            )
            assert batch.status_code == 201, batch.text
            async with asyncio.timeout(30):
                answer = await poll
        finally:
            poll.cancel()
            await asyncio.gather(poll, return_exceptions=True)
    results = batch.json()["messages"]
    assert answer["messages"] == [
        {"id": result["id"], "time": result["time"], "channels": [channel], "data": data}
        for result, data in zip(results, ["first", {"second": [2]}, 3], strict=True)
    ]
    assert answer["cursor"] == results[-1]["id"]
    assert answer["gap"] is False

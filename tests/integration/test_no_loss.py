"""No message is lost, duplicated or reordered under a randomized concurrent workload.

Several publishers publish (one by one and in batches) to random sets of channels with
random pauses, while many subscribers re-poll with the cursor of each response, also
with random pauses. Every subscriber must end with exactly the messages published to
any of its channels, in publication order, each once, listing the right channels.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from tests.helpers import ServerProcess

N_CHANNELS = 6
N_PUBLISHERS = 3
MESSAGES_PER_PUBLISHER = 100
N_SUBSCRIBERS = 20
# Deadlines: generous, only there so a lost message fails the test instead of hanging it.
PUBLISH_DEADLINE_S = 40.0
DRAIN_DEADLINE_S = 20.0


@dataclass(frozen=True)
class Channel:
    id: int
    name: str | None

    def ref(self, rng: random.Random) -> int | str:
        """How a request names this channel: by id or, when it has one, by name."""
        if self.name is not None and rng.random() < 0.5:
            return self.name
        return self.id


@dataclass(frozen=True)
class Published:
    id: int
    time: float
    channels: frozenset[int]
    data: Any


@dataclass
class Subscriber:
    index: int
    channels: frozenset[int]
    refs: list[int | str]
    received: list[dict[str, Any]] = field(default_factory=list)
    polls: int = 0
    cursor: str | None = None


async def _create_channels(
    session: aiohttp.ClientSession, seed: int, rng: random.Random
) -> list[Channel]:
    channels = []
    for i in range(N_CHANNELS):
        body: dict[str, Any] = {}
        if rng.random() < 0.5:
            body["name"] = f"noloss-{seed}-{i}"
        async with session.post("/channels", json=body) as resp:
            assert resp.status == 201, await resp.text()
            created = await resp.json()
        assert created["name"] == body.get("name")
        channels.append(Channel(created["id"], created["name"]))
    return channels


async def _publisher(
    session: aiohttp.ClientSession,
    number: int,
    rng: random.Random,
    channels: list[Channel],
    log: list[Published],
) -> None:
    sent = 0
    while sent < MESSAGES_PER_PUBLISHER:
        left = MESSAGES_PER_PUBLISHER - sent
        size = rng.randint(2, min(8, left)) if left >= 2 and rng.random() < 0.4 else 1
        items = []
        for _ in range(size):
            targets = rng.sample(channels, rng.randint(1, N_CHANNELS))
            data = {"publisher": number, "seq": sent, "noise": rng.random()}
            items.append(({c.id for c in targets}, [c.ref(rng) for c in targets], data))
            sent += 1
        if size == 1:
            ((_, refs, data),) = items
            async with session.post("/publish", json={"channels": refs, "data": data}) as resp:
                assert resp.status == 201, await resp.text()
                results = [await resp.json()]
        else:
            body = {"messages": [{"channels": refs, "data": data} for _, refs, data in items]}
            async with session.post("/publish/batch", json=body) as resp:
                assert resp.status == 201, await resp.text()
                results = (await resp.json())["messages"]
        assert len(results) == len(items)
        ids = [int(result["id"]) for result in results]
        assert ids == sorted(ids) and len(set(ids)) == len(ids), f"batch ids not in order: {ids}"
        for (wanted, _, data), result in zip(items, results, strict=True):
            assert sorted(result["channels"]) == sorted(wanted), (result, wanted)
            log.append(
                Published(int(result["id"]), result["time"], frozenset(result["channels"]), data)
            )
        await asyncio.sleep(rng.uniform(0, 0.02))


async def _subscriber(
    session: aiohttp.ClientSession,
    sub: Subscriber,
    rng: random.Random,
    done: asyncio.Event,
    targets: dict[int, int | None],
) -> None:
    """Poll with the last cursor until publishing is over and the last message seen."""
    while True:
        started_after_done = done.is_set()
        params = {
            "channels": ",".join(map(str, sub.refs)),
            "timeout": str(rng.choice([0, 0.5, 1, 1.5, 2])),
        }
        if sub.cursor is not None:
            params["since"] = sub.cursor
        async with session.get("/subscribe", params=params) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        _receive(sub, body)
        if started_after_done and _caught_up(sub, targets):
            return
        if rng.random() < 0.1:
            await asyncio.sleep(rng.uniform(0.1, 0.5))
        else:
            await asyncio.sleep(rng.uniform(0, 0.05))


def _receive(sub: Subscriber, body: dict[str, Any]) -> None:
    """Check one poll's answer against what the subscriber had, and take it in."""
    sub.polls += 1
    assert body["gap"] is False, f"subscriber {sub.index}: gap with an ample cache: {body}"
    cursor = body["cursor"]
    assert isinstance(cursor, str), body
    if sub.cursor is not None:
        assert int(cursor) >= int(sub.cursor), f"cursor went back: {sub.cursor} -> {cursor}"
        for message in body["messages"]:
            assert int(message["id"]) > int(sub.cursor), f"not after since: {message}"
    if body["messages"]:
        assert cursor == body["messages"][-1]["id"], body
    sub.received.extend(body["messages"])
    sub.cursor = cursor


def _caught_up(sub: Subscriber, targets: dict[int, int | None]) -> bool:
    """Whether the subscriber has seen the last message published to its channels."""
    target = targets[sub.index]
    return target is None or (sub.cursor is not None and int(sub.cursor) >= target)


def _check(sub: Subscriber, published: list[Published]) -> None:
    expected = [m for m in published if m.channels & sub.channels]
    got = [int(m["id"]) for m in sub.received]
    want = [m.id for m in expected]
    if got != want:
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        twice = sorted({i for i in got if got.count(i) > 1})
        raise AssertionError(
            f"subscriber {sub.index} on {sorted(sub.channels)}: got {len(got)} messages, "
            f"expected {len(want)}; missing {missing[:10]}, unexpected {extra[:10]}, "
            f"twice {twice[:10]}, in order: {got == sorted(got)}"
        )
    for message, original in zip(sub.received, expected, strict=True):
        assert message["time"] == original.time, (message, original)
        assert message["data"] == original.data, (message, original)
        listed = message["channels"]
        assert len(set(listed)) == len(listed), f"a channel listed twice: {message}"
        assert set(listed) == original.channels & sub.channels, (
            f"subscriber on {sorted(sub.channels)}: {message} was published to "
            f"{sorted(original.channels)}"
        )


async def _run(url: str, seed: int, headers: dict[str, str] | None = None) -> None:
    """The whole workload against the server (or proxy) at `url`; `headers` go with
    every request (a publisher key)."""
    rng = random.Random(seed)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        url, connector=connector, timeout=timeout, headers=headers
    ) as session:
        channels = await _create_channels(session, seed, rng)
        subscribers = []
        for index in range(N_SUBSCRIBERS):
            chosen = rng.sample(channels, rng.randint(1, 3))
            subscribers.append(
                Subscriber(index, frozenset(c.id for c in chosen), [c.ref(rng) for c in chosen])
            )
        published: list[Published] = []
        done = asyncio.Event()
        targets: dict[int, int | None] = {}
        sub_tasks = [
            asyncio.create_task(
                _subscriber(session, sub, random.Random(rng.random()), done, targets)
            )
            for sub in subscribers
        ]
        pub_tasks = [
            asyncio.create_task(
                _publisher(session, number, random.Random(rng.random()), channels, published)
            )
            for number in range(N_PUBLISHERS)
        ]
        try:
            async with asyncio.timeout(PUBLISH_DEADLINE_S):
                await asyncio.gather(*pub_tasks)
            published.sort(key=lambda m: m.id)
            assert len(published) == N_PUBLISHERS * MESSAGES_PER_PUBLISHER
            assert len({m.id for m in published}) == len(published), "a message id was reused"
            for sub in subscribers:
                mine = [m.id for m in published if m.channels & sub.channels]
                targets[sub.index] = mine[-1] if mine else None
            done.set()
            drain_started = time.monotonic()
            try:
                async with asyncio.timeout(DRAIN_DEADLINE_S):
                    await asyncio.gather(*sub_tasks)
            except TimeoutError:
                behind = [
                    (sub.index, sub.cursor, targets[sub.index])
                    for sub in subscribers
                    if sub.cursor is None or int(sub.cursor) < (targets[sub.index] or 0)
                ]
                raise AssertionError(
                    f"seed {seed}: subscribers still short of their last message after "
                    f"{time.monotonic() - drain_started:.1f}s (index, cursor, last): {behind}"
                ) from None
        finally:
            for task in [*sub_tasks, *pub_tasks]:
                task.cancel()
            await asyncio.gather(*sub_tasks, *pub_tasks, return_exceptions=True)
    for sub in subscribers:
        _check(sub, published)
    # The workload really was concurrent: every subscriber polled more than once.
    assert all(sub.polls > 1 for sub in subscribers)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_subscriber_gets_exactly_its_messages(server: ServerProcess, seed: int) -> None:
    await _run(server.url, seed)

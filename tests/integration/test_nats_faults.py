"""Faults under load on PushUp nodes sharing the three-server JetStream cluster of
deploy/nats: a node killed with -9, a NATS server frozen (SIGSTOP) for seconds, and
every NATS server restarted. Sixteen publishers publish and sixteen subscribers poll
with their cursors, each moving to another node when its own fails; every
acknowledged message (a 201) reaches every subscriber once, in order, and the nodes
serve again without a restart."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import nats
import pytest

from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, holds_polls, until
from tests.integration import test_cluster_haproxy as balanced
from tests.integration import test_no_loss as no_loss
from tests.laggingproxy import lagging
from tests.natsservers import NatsServer, nodes_on

DEADLINE_S = 30.0
N_CHANNELS = 4
N_PUBLISHERS = 16
N_SUBSCRIBERS = 16
# Acknowledged publications before the fault, and again after it (the nodes serve).
BEFORE_FAULT = 80
AFTER_FAULT = 80
PAUSE_S = 5.0
# Every message of the test stays cached, however fast the machine publishes.
ROOMY = ("--max-messages", "1000000")
FAILED = balanced.RETRY_STATUSES


@dataclass
class Load:
    """What the publishers had acknowledged, or left uncertain (an attempt that failed
    may still have been stored), and the failures the clients rode out."""

    acknowledged: list[no_loss.Published] = field(default_factory=list)
    uncertain: list[Any] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def sessions_to(nodes: list[ServerProcess]) -> AsyncIterator[list[aiohttp.ClientSession]]:
    timeout = aiohttp.ClientTimeout(total=30)
    sessions = [
        aiohttp.ClientSession(node.url, timeout=timeout, connector=aiohttp.TCPConnector(limit=0))
        for node in nodes
    ]
    try:
        yield sessions
    finally:
        for session in sessions:
            await session.close()


async def _publisher(
    sessions: list[aiohttp.ClientSession],
    number: int,
    rng: random.Random,
    channels: list[int],
    load: Load,
) -> None:
    """Publish until told to stop; a failed attempt is left uncertain and made again,
    as a new message, through the next node."""
    node = number % len(sessions)
    for seq in itertools.count():
        if load.stop.is_set():
            return
        targets = rng.sample(channels, rng.randint(1, N_CHANNELS))
        for attempt in itertools.count():
            data = {"publisher": number, "seq": seq, "attempt": attempt}
            result = await _publish(sessions[node], targets, data, load)
            if result is not None:
                break
            load.uncertain.append(data)
            node = (node + 1) % len(sessions)
            await asyncio.sleep(rng.uniform(0.05, 0.2))
        load.acknowledged.append(
            no_loss.Published(int(result["id"]), result["time"], frozenset(targets), data)
        )
        await asyncio.sleep(rng.uniform(0, 0.05))


async def _publish(
    session: aiohttp.ClientSession, targets: list[int], data: Any, load: Load
) -> dict[str, Any] | None:
    """The publication's answer, or None if it failed (503, a dead node)."""
    try:
        async with session.post("/publish", json={"channels": targets, "data": data}) as resp:
            if resp.status in FAILED:
                load.failures.append(f"publish: {resp.status} {await resp.text()}")
                return None
            assert resp.status == 201, await resp.text()
            result: dict[str, Any] = await resp.json()
            return result
    except (aiohttp.ClientError, TimeoutError) as exc:
        load.failures.append(f"publish: {exc!r}")
        return None


async def _subscriber(
    sessions: list[aiohttp.ClientSession],
    sub: no_loss.Subscriber,
    rng: random.Random,
    done: asyncio.Event,
    targets: dict[int, int | None],
    load: Load,
) -> None:
    """Poll with the cursor of each answer; a failed poll is made again, with the same
    cursor, on the next node."""
    node = sub.index % len(sessions)
    while True:
        started_after_done = done.is_set()
        params = {"channels": ",".join(map(str, sub.refs)), "timeout": str(rng.choice([0, 1, 2]))}
        if sub.cursor is not None:
            params["since"] = sub.cursor
        body = None
        try:
            async with sessions[node].get("/subscribe", params=params) as resp:
                if resp.status in FAILED:
                    load.failures.append(f"poll: {resp.status} {await resp.text()}")
                else:
                    assert resp.status == 200, await resp.text()
                    body = await resp.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            load.failures.append(f"poll: {exc!r}")
        if body is None:
            node = (node + 1) % len(sessions)
            await asyncio.sleep(rng.uniform(0.05, 0.2))
            continue
        no_loss._receive(sub, body)
        if started_after_done and no_loss._caught_up(sub, targets):
            return
        await asyncio.sleep(rng.uniform(0, 0.05))


async def _run(
    sessions: list[aiohttp.ClientSession],
    fault: Callable[[list[int]], Awaitable[None]],
    survivors: list[int],
    seed: int,
) -> Load:
    """The load on every node, `fault` once it is under way, then the checks: every
    acknowledged message stored and delivered to its subscribers once, in order."""
    rng = random.Random(seed)
    channels = []
    for _ in range(N_CHANNELS):
        async with sessions[survivors[0]].post("/channels") as resp:
            assert resp.status == 201, await resp.text()
            channels.append((await resp.json())["id"])
    subscribers = [
        no_loss.Subscriber(index, frozenset(chosen), list(chosen))
        for index in range(N_SUBSCRIBERS)
        for chosen in [rng.sample(channels, rng.randint(1, 2))]
    ]
    load = Load()
    done = asyncio.Event()
    targets: dict[int, int | None] = {}
    polling = [
        asyncio.create_task(
            _subscriber(sessions, sub, random.Random(rng.random()), done, targets, load)
        )
        for sub in subscribers
    ]
    publishing = [
        asyncio.create_task(
            _publisher(sessions, number, random.Random(rng.random()), channels, load)
        )
        for number in range(N_PUBLISHERS)
    ]
    try:
        await until(_acknowledged(load, BEFORE_FAULT), timeout=DEADLINE_S, what="the load")
        await fault(channels)
        after_fault = len(load.acknowledged) + AFTER_FAULT
        # The nodes serve on: publications are acknowledged again after the fault.
        await until(_acknowledged(load, after_fault), timeout=DEADLINE_S, what="serving again")
        load.stop.set()
        async with asyncio.timeout(DEADLINE_S):
            await asyncio.gather(*publishing)
        stored = await _stored_once_caught_up(sessions[survivors[-1]], channels, load)
        by_id = {m.id: m for m in stored}
        for message in load.acknowledged:
            assert by_id.get(message.id) == message, f"acknowledged but lost: {message}"
        unacknowledged = [m.data for m in stored if m not in load.acknowledged]
        assert all(data in load.uncertain for data in unacknowledged), unacknowledged
        for sub in subscribers:
            mine = [m.id for m in stored if m.channels & sub.channels]
            targets[sub.index] = mine[-1] if mine else None
        done.set()
        async with asyncio.timeout(DEADLINE_S):
            await asyncio.gather(*polling)
    finally:
        for task in [*polling, *publishing]:
            task.cancel()
        await asyncio.gather(*polling, *publishing, return_exceptions=True)
    for sub in subscribers:
        no_loss._check(sub, stored)
    for index in survivors:
        async with sessions[index].get("/health") as resp:
            assert resp.status == 200, await resp.text()
    return load


def _acknowledged(load: Load, count: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return len(load.acknowledged) >= count

    return probe


async def _stored_once_caught_up(
    session: aiohttp.ClientSession, channels: list[int], load: Load
) -> list[no_loss.Published]:
    """Every message stored on these channels, read from one node once it has followed
    the stream past every acknowledged one (it reads its own copy, which may lag)."""
    stored: list[no_loss.Published] = []

    async def caught_up() -> bool:
        stored[:] = await balanced._stored(session, channels)
        ids = {m.id for m in stored}
        return all(m.id in ids for m in load.acknowledged)

    await until(caught_up, timeout=DEADLINE_S, interval=0.2, what="a node to catch up")
    return stored


async def test_a_node_killed_under_load_costs_no_one_an_acknowledged_message(
    nats_cluster: list[NatsServer], server_factory: ServerFactory
) -> None:
    nodes = nodes_on(server_factory, nats_cluster, 3, *ROOMY)
    victim = nodes[1]
    async with sessions_to(nodes) as sessions:

        async def kill_a_node(channels: list[int]) -> None:
            victim.proc.kill()
            await asyncio.to_thread(victim.proc.wait)

        load = await _run(sessions, kill_a_node, survivors=[0, 2], seed=41)
    # Its subscribers (a third) lost a poll to it and went on elsewhere.
    assert any(failure.startswith("poll: ") for failure in load.failures), load.failures


def test_a_cursor_from_a_node_ahead_repeats_nothing_on_a_node_behind(
    nats_cluster: list[NatsServer], server_factory: ServerFactory
) -> None:
    """A subscriber whose node died polls another with its cursor: that node may not
    have applied the newest entries yet (here it hears NATS a quarter second late, as a
    loaded node would). It must neither hand back a cursor below the one it was given
    nor deliver again what the cursor already covers."""
    (ahead,) = nodes_on(server_factory, nats_cluster, 1)
    with lagging(nats_cluster[1].port, lag_s=0.25) as proxy:
        behind = server_factory("--engine", f"nats://{proxy.address}")
        first, second = ahead.client(), behind.client()
        channel = first.post("/channels").json()["id"]
        for n in range(4):
            published = first.post("/publish", json={"channels": [channel], "data": n})
            assert published.status_code == 201, published.text
            cursor = published.json()["id"]
            params = {"channels": channel, "since": cursor, "timeout": n % 2}
            poll = second.get("/subscribe", params=params)
            assert poll.status_code == 200, poll.text
            body = poll.json()
            assert body["messages"] == [], f"delivered again after {cursor}: {body}"
            assert int(body["cursor"]) >= int(cursor), body


@pytest.mark.parametrize("which", ["stream leader", "busiest"])
async def test_a_nats_server_frozen_for_seconds_costs_no_one_an_acknowledged_message(
    nats_cluster: list[NatsServer], server_factory: ServerFactory, which: str
) -> None:
    """Frozen, the server neither answers nor drops its connections: the stream's
    leader (the cluster elects another), or the one most nodes are connected to
    (their writes wait, then answer 503)."""
    nodes = nodes_on(server_factory, nats_cluster, 3, *ROOMY)
    async with sessions_to(nodes) as sessions:

        async def freeze_a_server(channels: list[int]) -> None:
            if which == "stream leader":
                server = await _stream_leader(nats_cluster)
            else:
                server = max(nats_cluster, key=NatsServer.connections)
            server.pause()
            try:
                await asyncio.sleep(PAUSE_S)  # the fault itself: how long it lasts
            finally:
                server.resume()

        await _run(sessions, freeze_a_server, survivors=[0, 1, 2], seed=43)


async def _stream_leader(servers: list[NatsServer]) -> NatsServer:
    """The server leading the PUSHUP stream (its server_name is nats-<n>)."""
    nc = await nats.connect(servers[0].url)
    try:
        info = await nc.jetstream().stream_info("PUSHUP")
    finally:
        await nc.close()
    assert info.cluster is not None and info.cluster.leader is not None
    return servers[int(info.cluster.leader.rsplit("-", 1)[1]) - 1]


async def test_every_nats_server_restarted_loses_nothing_and_nodes_recover_on_their_own(
    nats_cluster: list[NatsServer], server_factory: ServerFactory
) -> None:
    """Stop all three servers, start them again on the same ports and stores: what was
    acknowledged before is still there, ids go on growing, a poll parked across the
    restart is woken by the first publication after it, and the nodes publish and
    poll again by themselves; a node started while the cluster elects its leaders
    starts too."""
    nodes = nodes_on(server_factory, nats_cluster, 2)
    async with sessions_to(nodes) as sessions:
        async with sessions[0].post("/channels", json={"name": "kept"}) as resp:
            assert resp.status == 201, await resp.text()
            channel = (await resp.json())["id"]
        start = (await _poll(sessions[1], channel, None, timeout=0))["cursor"]
        load = Load()
        before = [await _published(sessions[n % 2], channel, n, load) for n in range(20)]
        parked = asyncio.create_task(_poll(sessions[1], channel, before[-1], timeout=60))
        await until(holds_polls(sessions[1], [channel]), timeout=DEADLINE_S, what="a parked poll")
        await asyncio.gather(*(asyncio.to_thread(server.stop) for server in nats_cluster))
        await _while_nats_is_down(sessions, channel, start, before, load)
        for server in nats_cluster:
            server.start(wait=False)
        # A node started meanwhile waits for the cluster to have its leaders.
        (late,) = await asyncio.to_thread(nodes_on, server_factory, nats_cluster, 1)
        for server in nats_cluster:
            await asyncio.to_thread(server.wait_ready)
        after = [
            await _published(session, channel, 100 + n, load) for n, session in enumerate(sessions)
        ]
        assert int(after[0]) > int(before[-1]), (before, after)
        woken = await asyncio.wait_for(parked, timeout=DEADLINE_S)
        async with sessions_to([late]) as (on_late,):
            for session in [*sessions, on_late]:
                stored = await _once_there(session, channel, start, before + after)
                ids = [m["id"] for m in stored]
                assert ids[: len(before)] == before, ids
                # Beyond what was acknowledged, only attempts that failed (perhaps stored).
                extra = [m["data"] for m in stored if m["id"] not in before + after]
                assert all(data in load.uncertain for data in extra), (extra, load.failures)
                async with session.get("/health") as resp:
                    assert resp.status == 200, await resp.text()
        # The parked poll got what came first after the restart.
        assert woken["messages"], woken
        assert woken["messages"] == stored[len(before) : len(before) + len(woken["messages"])]


async def _while_nats_is_down(
    sessions: list[aiohttp.ClientSession],
    channel: int,
    start: str,
    before: list[str],
    load: Load,
) -> None:
    """A node without NATS says so at once to every publisher (503, not a wait in
    line behind the others' timeouts), and answers polls from its copy."""
    tries = list(range(1000, 1000 + N_PUBLISHERS))
    load.uncertain.extend(tries)
    async with asyncio.timeout(DEADLINE_S / 2):
        answers = await asyncio.gather(
            *(_publish(sessions[0], [channel], data, load) for data in tries)
        )
    assert answers == [None] * len(tries), answers
    assert all(" 503 " in failure for failure in load.failures), load.failures
    body = await _poll(sessions[1], channel, start, timeout=0)
    assert [m["id"] for m in body["messages"]] == before, body


async def _once_there(
    session: aiohttp.ClientSession, channel: int, since: str, wanted: list[str]
) -> list[dict[str, Any]]:
    """The messages after `since`, read once the node has applied all of `wanted`."""
    messages: list[dict[str, Any]] = []

    async def there() -> bool:
        messages[:] = (await _poll(session, channel, since, timeout=0))["messages"]
        ids = {m["id"] for m in messages}
        return all(i in ids for i in wanted)

    await until(there, timeout=DEADLINE_S, interval=0.2, what=f"messages {wanted}")
    return messages


async def _poll(
    session: aiohttp.ClientSession, channel: int, since: str | None, *, timeout: float
) -> dict[str, Any]:
    params = {"channels": str(channel), "timeout": str(timeout)}
    if since is not None:
        params["since"] = since
    async with session.get("/subscribe", params=params) as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def _published(session: aiohttp.ClientSession, channel: int, data: int, load: Load) -> str:
    """The id of a publication made again until it is acknowledged; the data of each
    failed attempt (perhaps stored all the same) goes to `load.uncertain`."""

    async def acknowledged() -> dict[str, Any] | None:
        result = await _publish(session, [channel], data, load)
        if result is None:
            load.uncertain.append(data)
        return result

    result = await until(acknowledged, timeout=DEADLINE_S, interval=0.2, what="a 201")
    return str(result["id"])

"""A node killed with SIGKILL while subscribers poll the nodes directly, with no balancer
to re-send their polls: the subscribers on the dead node get connection errors and poll
another node with their cursor, and every subscriber ends with every acknowledged
message exactly once, in order."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.conftest import ServerFactory
from tests.helpers import at_least, holds_polls, until
from tests.integration import test_no_loss as no_loss

N_NODES = 3
N_CHANNELS = 3
SUBSCRIBERS_PER_NODE = 3
N_MESSAGES = 150
DEADLINE_S = 20.0
# Long enough that a subscriber is parked most of the time, so the kill cuts some polls.
POLL_TIMEOUTS_S = ("1", "2", "3")


@dataclass
class Roamer:
    """A subscriber that starts on one node and, on a connection error, polls the next
    node with the cursor it has (as a browser given several addresses would)."""

    sub: no_loss.Subscriber
    order: list[int]  # node indexes, the starting node first
    errors: list[tuple[int, str]] = field(default_factory=list)
    # The node each answer came from, in order.
    answered_by: list[int] = field(default_factory=list)

    @property
    def node(self) -> int:
        return self.order[len(self.errors) % len(self.order)]


async def test_subscribers_of_a_killed_node_repoll_another_with_their_cursor(
    server_factory: ServerFactory, redis_url: str
) -> None:
    servers = [server_factory("--engine", redis_url) for _ in range(N_NODES)]
    victim = N_NODES - 1
    survivors = [i for i in range(N_NODES) if i != victim]
    rng = random.Random(17)
    timeout = aiohttp.ClientTimeout(total=30)
    sessions = [
        aiohttp.ClientSession(s.url, timeout=timeout, connector=aiohttp.TCPConnector(limit=0))
        for s in servers
    ]
    try:
        channels = []
        for _ in range(N_CHANNELS):
            async with sessions[0].post("/channels") as resp:
                assert resp.status == 201, await resp.text()
                channels.append((await resp.json())["id"])
        roamers = []
        for index in range(N_NODES * SUBSCRIBERS_PER_NODE):
            chosen = rng.sample(channels, rng.randint(1, 2))
            start = index % N_NODES
            roamers.append(
                Roamer(
                    no_loss.Subscriber(index, frozenset(chosen), list(chosen)),
                    [(start + step) % N_NODES for step in range(N_NODES)],
                )
            )
        targets: dict[int, int | None] = {}
        polling = [
            asyncio.create_task(_roam(sessions, r, random.Random(rng.random()))) for r in roamers
        ]
        acknowledged: list[no_loss.Published] = []
        publishing = asyncio.create_task(
            _publish(
                [sessions[i] for i in survivors],
                channels,
                random.Random(rng.random()),
                acknowledged,
            )
        )
        try:
            # Killed a third of the way through, while it holds parked polls.
            await until(
                at_least(acknowledged, N_MESSAGES // 3), timeout=DEADLINE_S, what="publications"
            )
            await until(
                holds_polls(sessions[victim], channels),
                timeout=DEADLINE_S,
                what="polls parked on the node to kill",
            )
            killed_at = len(acknowledged)
            servers[victim].proc.kill()
            await asyncio.to_thread(servers[victim].proc.wait)
            async with asyncio.timeout(no_loss.PUBLISH_DEADLINE_S):
                await publishing
            for r in roamers:
                mine = [m.id for m in acknowledged if m.channels & r.sub.channels]
                targets[r.sub.index] = mine[-1] if mine else None
            # Publishing is over: a subscriber whose cursor reached its last message has
            # everything (every later answer would only hold ids above the cursor).
            await until(
                _caught_up(roamers, targets, polling),
                timeout=no_loss.DRAIN_DEADLINE_S,
                what="every subscriber to catch up",
            )
        finally:
            for task in [*polling, publishing]:
                task.cancel()
            await asyncio.gather(*polling, publishing, return_exceptions=True)
    finally:
        for session in sessions:
            await session.close()

    assert killed_at < len(acknowledged) == N_MESSAGES
    for r in roamers:
        no_loss._check(r.sub, acknowledged)
    for r in roamers:
        if r.order[0] == victim:
            # The path under test ran: errors from the dead node, then answers from
            # another one, with the same cursor.
            assert r.errors, f"subscriber {r.sub.index} never saw its node die"
            assert {node for node, _ in r.errors} == {victim}, r.errors
            assert r.answered_by[-1] != victim
        else:
            assert not r.errors, f"subscriber {r.sub.index} on a live node: {r.errors}"
            assert set(r.answered_by) == {r.order[0]}
    assert all(servers[i].alive() for i in survivors)


async def _roam(sessions: list[aiohttp.ClientSession], roamer: Roamer, rng: random.Random) -> None:
    """Poll with the last cursor, until cancelled; a failed poll is made again at once
    on the next node, with the same cursor."""
    sub = roamer.sub
    while True:
        params = {"channels": ",".join(map(str, sub.refs)), "timeout": rng.choice(POLL_TIMEOUTS_S)}
        if sub.cursor is not None:
            params["since"] = sub.cursor
        node = roamer.node
        try:
            async with sessions[node].get("/subscribe", params=params) as resp:
                assert resp.status == 200, await resp.text()
                body = await resp.json()
        except (aiohttp.ClientError, TimeoutError) as exc:  # refused, reset, cut short
            roamer.errors.append((node, type(exc).__name__))
            continue
        roamer.answered_by.append(node)
        no_loss._receive(sub, body)


async def _publish(
    sessions: list[aiohttp.ClientSession],
    channels: list[int],
    rng: random.Random,
    acknowledged: list[no_loss.Published],
) -> None:
    """Publish through the live nodes in turn; every publication must be acknowledged."""
    for seq in range(N_MESSAGES):
        targets = rng.sample(channels, rng.randint(1, N_CHANNELS))
        data = {"seq": seq}
        async with sessions[seq % len(sessions)].post(
            "/publish", json={"channels": targets, "data": data}
        ) as resp:
            assert resp.status == 201, await resp.text()
            result = await resp.json()
        assert sorted(result["channels"]) == sorted(targets)
        acknowledged.append(
            no_loss.Published(int(result["id"]), result["time"], frozenset(targets), data)
        )
        await asyncio.sleep(rng.uniform(0, 0.01))


def _caught_up(
    roamers: list[Roamer], targets: dict[int, int | None], polling: list[asyncio.Task[None]]
) -> Any:
    async def probe() -> bool:
        for task in polling:
            if task.done():
                task.result()  # a subscriber that failed fails the test, now
        return all(no_loss._caught_up(r.sub, targets) for r in roamers)

    return probe

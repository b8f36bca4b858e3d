"""Three PushUp nodes on one Redis (and on one NATS) behind a real HAProxy running
deploy/haproxy.cfg (the paper's section 4.4): a publication through any node reaches
polls on every node, the randomized no-loss workload holds through the balancer, and a
node killed with -9 while subscribers poll costs none of them a message: they re-poll
with their cursor, HAProxy sends them to a live node and its health checks take the dead one out."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import pytest

from pushup.client import AsyncPublisher, Message, subscribe
from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, at_least, holds_polls, until, wait_for
from tests.integration import test_no_loss as no_loss
from tests.proxies import HAProxy

KEY = "cluster-publisher-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
DEADLINE_S = 20.0
# Behind the balancer no poll may outlive its 65 s timeouts (see deploy/haproxy.cfg).
NODE_FLAGS = ("--publisher-key", KEY, "--max-timeout", "60")


@dataclass
class Cluster:
    nodes: list[ServerProcess]
    proxy: HAProxy
    engine_url: str
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self) -> httpx.Client:
        """A client of the balancer, with the publisher key; closed after the test."""
        client = httpx.Client(base_url=self.proxy.url, headers=AUTH, timeout=90.0)
        self.clients.append(client)
        return client


@pytest.fixture(params=["redis", "nats"])
def cluster(server_factory: ServerFactory, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    engine_url = str(request.getfixturevalue(f"{request.param}_url"))
    nodes = [server_factory("--engine", engine_url, *NODE_FLAGS) for _ in range(3)]
    proxy = HAProxy([f"127.0.0.1:{node.port}" for node in nodes])
    cluster = Cluster(nodes, proxy, engine_url)
    try:
        proxy.start()
        yield cluster
    finally:
        for client in cluster.clients:
            client.close()
        proxy.cleanup()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=12)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


def subscribers_on(node: httpx.Client, channel: int) -> int:
    """Polls parked on this node (`subscribers` counts every node's)."""
    response = node.get(f"/channels/{channel}")
    assert response.status_code == 200, response.text
    count: int = response.json()["local_subscribers"]
    return count


def test_a_publication_through_any_node_reaches_polls_on_every_node(
    cluster: Cluster, pool: ThreadPoolExecutor
) -> None:
    balanced = cluster.client()
    channel = balanced.post("/channels", json={"name": "everywhere"}).json()["id"]
    cursor = balanced.get("/subscribe", params={"channels": channel, "timeout": 0}).json()["cursor"]
    direct = [node.client(headers=AUTH) for node in cluster.nodes]
    counters = [node.client(headers=AUTH) for node in cluster.nodes]
    entries = [("haproxy", balanced), *((f"node{i}", c) for i, c in enumerate(direct, 1))]
    balancers = [cluster.client() for _ in range(3)]
    for name, entry in entries:
        params = {"channels": channel, "since": cursor, "timeout": 50}
        # One poll parked directly on each node, three more through the balancer.
        polls: list[Future[httpx.Response]] = [
            pool.submit(client.get, "/subscribe", params=params) for client in [*direct, *balancers]
        ]
        parked = len(polls)
        wait_for(
            lambda: sum(subscribers_on(node, channel) for node in counters) == parked,  # noqa: B023
            timeout=DEADLINE_S,
            what="every poll to park",
        )
        assert all(subscribers_on(node, channel) >= 1 for node in counters)
        published = entry.post("/publish", json={"channels": ["everywhere"], "data": name})
        assert published.status_code == 201, published.text
        message_id = published.json()["id"]
        for poll in polls:
            response = poll.result(timeout=DEADLINE_S)
            assert response.status_code == 200, response.text
            body = response.json()
            assert [(m["id"], m["data"]) for m in body["messages"]] == [(message_id, name)]
        cursor = message_id


async def test_no_message_is_lost_or_repeated_through_haproxy(cluster: Cluster) -> None:
    """The core's randomized no-loss workload, every request through the balancer."""
    await no_loss._run(cluster.proxy.url, seed=5, headers=AUTH)
    # Round robin really spread it: every node took requests.
    sessions = {name: int(row["stot"]) for name, row in cluster.proxy.stats().items()}
    assert all(count > 0 for count in sessions.values()), sessions


def test_health_checks_take_a_dead_node_out_and_a_restarted_one_back(
    cluster: Cluster, server_factory: ServerFactory
) -> None:
    dead = cluster.nodes[1]
    dead.proc.kill()
    dead.proc.wait()
    wait_for(
        lambda: cluster.proxy.statuses().get("node2") == "DOWN",
        timeout=DEADLINE_S,
        what="HAProxy to mark node2 DOWN",
    )
    assert "node2 is DOWN" in cluster.proxy.log()
    # Round robin now skips it: every request is answered by a live node.
    with cluster.client() as balanced:
        for _ in range(12):
            assert balanced.get("/health").status_code == 200
    server_factory("--engine", cluster.engine_url, *NODE_FLAGS, port=dead.port)
    wait_for(
        lambda: cluster.proxy.statuses().get("node2") == "UP",
        timeout=DEADLINE_S,
        what="HAProxy to take node2 back",
    )


# -- a node killed while subscribers poll -------------------------------------------------

N_CHANNELS = 4
N_SUBSCRIBERS = 16
N_MESSAGES = 240
RETRY_STATUSES = (502, 503, 504)


async def test_a_node_killed_while_subscribers_poll_costs_no_one_a_message(
    cluster: Cluster,
) -> None:
    victim, live = cluster.nodes[2], cluster.nodes[0]
    rng = random.Random(11)
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(
            cluster.proxy.url,
            headers=AUTH,
            timeout=timeout,
            connector=aiohttp.TCPConnector(limit=0),
        ) as balanced,
        aiohttp.ClientSession(victim.url, headers=AUTH, timeout=timeout) as on_victim,
        aiohttp.ClientSession(live.url, headers=AUTH, timeout=timeout) as on_live,
    ):
        channels = []
        for _ in range(N_CHANNELS):
            async with balanced.post("/channels") as resp:
                assert resp.status == 201, await resp.text()
                channels.append((await resp.json())["id"])
        subscribers = [
            no_loss.Subscriber(index, frozenset(chosen), list(chosen))
            for index in range(N_SUBSCRIBERS)
            for chosen in [rng.sample(channels, rng.randint(1, 2))]
        ]
        done = asyncio.Event()
        targets: dict[int, int | None] = {}
        errors: list[str] = []
        polling = [
            asyncio.create_task(
                _resilient_subscriber(
                    balanced, sub, random.Random(rng.random()), done, targets, errors
                )
            )
            for sub in subscribers
        ]
        acknowledged: list[no_loss.Published] = []
        uncertain: list[Any] = []
        publishing = asyncio.create_task(
            _publisher(balanced, channels, random.Random(rng.random()), acknowledged, uncertain)
        )
        try:
            # Kill it a third of the way through, while it holds parked polls.
            await until(at_least(acknowledged, N_MESSAGES // 3), timeout=DEADLINE_S * 2)
            await until(holds_polls(on_victim, channels), timeout=DEADLINE_S, what="polls")
            victim.proc.kill()
            await asyncio.to_thread(victim.proc.wait)
            async with asyncio.timeout(no_loss.PUBLISH_DEADLINE_S):
                await publishing
            # What the cluster stored: every acknowledged message, and perhaps some
            # whose answer the dying node never sent.
            stored = await _stored(on_live, channels)
            by_id = {m.id: m for m in stored}
            for message in acknowledged:
                assert by_id.get(message.id) == message, f"acknowledged but lost: {message}"
            unacknowledged = [m.data for m in stored if m not in acknowledged]
            assert all(data in uncertain for data in unacknowledged), unacknowledged
            for sub in subscribers:
                mine = [m.id for m in stored if m.channels & sub.channels]
                targets[sub.index] = mine[-1] if mine else None
            done.set()
            async with asyncio.timeout(no_loss.DRAIN_DEADLINE_S):
                await asyncio.gather(*polling)
        finally:
            for task in [*polling, publishing]:
                task.cancel()
            await asyncio.gather(*polling, publishing, return_exceptions=True)
    for sub in subscribers:
        no_loss._check(sub, stored)
    wait_for(
        lambda: cluster.proxy.statuses().get("node3") == "DOWN",
        timeout=DEADLINE_S,
        what="HAProxy to mark node3 DOWN",
    )


async def _publisher(
    session: aiohttp.ClientSession,
    channels: list[int],
    rng: random.Random,
    acknowledged: list[no_loss.Published],
    uncertain: list[Any],
) -> None:
    """Publish through the balancer; an answer lost with its node leaves the message
    uncertain (stored or not), never retried, so nothing is stored twice."""
    for seq in range(N_MESSAGES):
        targets = rng.sample(channels, rng.randint(1, N_CHANNELS))
        data = {"seq": seq}
        try:
            async with session.post("/publish", json={"channels": targets, "data": data}) as resp:
                if resp.status in RETRY_STATUSES:
                    uncertain.append(data)
                    continue
                assert resp.status == 201, await resp.text()
                result = await resp.json()
        except (aiohttp.ClientError, TimeoutError):
            uncertain.append(data)
            continue
        assert sorted(result["channels"]) == sorted(targets)
        acknowledged.append(
            no_loss.Published(int(result["id"]), result["time"], frozenset(targets), data)
        )
        await asyncio.sleep(rng.uniform(0, 0.01))


async def _resilient_subscriber(
    session: aiohttp.ClientSession,
    sub: no_loss.Subscriber,
    rng: random.Random,
    done: asyncio.Event,
    targets: dict[int, int | None],
    errors: list[str],
) -> None:
    """As the no-loss subscriber, but a failed poll is simply made again with the same
    cursor, as a browser would."""
    while True:
        started_after_done = done.is_set()
        params = {
            "channels": ",".join(map(str, sub.refs)),
            "timeout": str(rng.choice([0, 0.5, 1, 2])),
        }
        if sub.cursor is not None:
            params["since"] = sub.cursor
        try:
            async with session.get("/subscribe", params=params) as resp:
                if resp.status in RETRY_STATUSES:
                    errors.append(f"{resp.status}")
                    body = None
                else:
                    assert resp.status == 200, await resp.text()
                    body = await resp.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            errors.append(repr(exc))
            body = None
        if body is None:
            await asyncio.sleep(rng.uniform(0.05, 0.2))
            continue
        no_loss._receive(sub, body)
        if started_after_done and no_loss._caught_up(sub, targets):
            return
        await asyncio.sleep(rng.uniform(0, 0.05))


async def _stored(session: aiohttp.ClientSession, channels: list[int]) -> list[no_loss.Published]:
    """Every cached message of these channels, read page by page from one node."""
    stored: list[no_loss.Published] = []
    params = {"channels": ",".join(map(str, channels)), "timeout": "0"}
    while True:
        async with session.get("/subscribe", params=params) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        if not body["messages"]:
            return stored
        stored.extend(
            no_loss.Published(int(m["id"]), m["time"], frozenset(m["channels"]), m["data"])
            for m in body["messages"]
        )
        params["since"] = body["cursor"]


async def test_a_client_subscription_rides_out_the_kill_of_its_node(cluster: Cluster) -> None:
    """`pushup.client.subscribe` through the balancer: the node holding its poll is
    killed, it goes on through a live node from its cursor, nothing lost or doubled."""
    async with AsyncPublisher(cluster.proxy.url, key=KEY) as publisher:
        channel = await publisher.create_channel(name="ride-out")
        published = [await publisher.publish(channel.id, i) for i in range(3)]
        received: list[Message] = []

        async def consume() -> None:
            async with subscribe(
                cluster.proxy.url, channel.id, timeout=30, backoff=0.05, max_backoff=0.5
            ) as messages:
                async for message in messages:
                    received.append(message)

        async def holder() -> ServerProcess | None:
            for node in cluster.nodes:
                async with httpx.AsyncClient(base_url=node.url, headers=AUTH) as direct:
                    body = (await direct.get(f"/channels/{channel.id}")).json()
                # A node's own count, where nodes also report the cluster's total.
                if body.get("local_subscribers", body["subscribers"]):
                    return node
            return None

        consumer = asyncio.create_task(consume())
        try:
            await until(lambda: _true(len(received) == 3), what="the cached messages")
            node = await until(holder, timeout=DEADLINE_S, what="the poll to park")
            node.proc.kill()
            node.proc.wait()
            name = f"node{cluster.nodes.index(node) + 1}"
            await until(
                lambda: _true(cluster.proxy.statuses().get(name) == "DOWN"),
                timeout=DEADLINE_S,
                what=f"HAProxy to mark {name} DOWN",
            )
            published += await publisher.publish_batch([(channel.id, i) for i in range(3, 6)])
            await until(lambda: _true(len(received) >= 6), timeout=DEADLINE_S, what="the rest")
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
    assert [m.id for m in received] == [p.id for p in published]
    assert [m.data for m in received] == list(range(6))


async def _true(value: bool) -> bool:
    return value

"""PushUp nodes on the three-server JetStream cluster of deploy/nats (R3 stream): a
publication through any node reaches polls on every node, and a NATS server killed with
-9 while a publisher publishes and subscribers poll with their cursors costs no one an
acknowledged message: each subscriber gets every one once, in order, and the nodes keep
serving without a restart."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import httpx
import pytest

from tests.conftest import ServerFactory
from tests.helpers import at_least, until, wait_for
from tests.integration import test_cluster_haproxy as balanced
from tests.integration import test_no_loss as no_loss
from tests.laggingproxy import lagging
from tests.natsservers import NatsServer, nodes_on
from tests.proxies import free_port

DEADLINE_S = 30.0


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=8)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


def test_the_stream_is_copied_to_all_three_servers(
    nats_cluster: list[NatsServer], server_factory: ServerFactory
) -> None:
    (node,) = nodes_on(server_factory, nats_cluster, 1)
    assert node.client().post("/channels").status_code == 201

    async def replicas() -> tuple[int, int]:
        import nats

        nc = await nats.connect(nats_cluster[0].url)
        try:
            info = await nc.jetstream().stream_info("PUSHUP")
        finally:
            await nc.close()
        assert info.cluster is not None
        return info.config.num_replicas or 0, len(info.cluster.replicas or [])

    assert asyncio.run(replicas()) == (3, 2)


def test_a_channel_made_through_one_node_is_known_at_once_to_the_others(
    nats_cluster: list[NatsServer], server_factory: ServerFactory
) -> None:
    """Each node reads its own copy of the stream; one that has not applied a new
    channel yet catches up before it answers 404 (read-your-writes across nodes). The
    second node hears NATS a quarter second late, as a loaded node would."""
    (first_node,) = nodes_on(server_factory, nats_cluster, 1)
    with lagging(nats_cluster[1].port, lag_s=0.25) as proxy:
        second_node = server_factory("--engine", f"nats://{proxy.address}")
        first, second = first_node.client(), second_node.client()
        _use_fresh_channels_across(first, second)


def test_a_cursor_from_a_node_ahead_repeats_nothing_on_a_node_behind(
    nats_cluster: list[NatsServer], server_factory: ServerFactory
) -> None:
    """A client's poll answered by a node that has a message, then its next poll on a
    node whose copy is still on its way: that node parks from the client's cursor, and
    the late copy is not sent again."""
    (first_node,) = nodes_on(server_factory, nats_cluster, 1)
    with lagging(nats_cluster[1].port, lag_s=0.5) as proxy:
        second_node = server_factory("--engine", f"nats://{proxy.address}")
        first, second = first_node.client(), second_node.client()
        channel = first.post("/channels", json={"name": "moving"}).json()["id"]
        # The second node serves the channel already: it hears its messages live.
        assert second.get("/subscribe", params={"channels": channel, "timeout": 0}).is_success
        published = first.post("/publish", json={"channels": [channel], "data": "once"})
        assert published.status_code == 201, published.text
        answered = first.get("/subscribe", params={"channels": channel, "timeout": 0}).json()
        assert [m["data"] for m in answered["messages"]] == ["once"]
        late = second.get(
            "/subscribe", params={"channels": channel, "since": answered["cursor"], "timeout": 2}
        )
        assert late.status_code == 200, late.text
        assert late.json()["messages"] == []
        assert late.json()["cursor"] == answered["cursor"]


def _use_fresh_channels_across(first: httpx.Client, second: httpx.Client) -> None:
    for n in range(8):
        made = first.post("/channels", json={"name": f"fresh-{n}"})
        assert made.status_code == 201, made.text
        channel = made.json()["id"]
        seen = second.get("/subscribe", params={"channels": channel, "timeout": 0})
        assert seen.status_code == 200, seen.text
        renewed = second.post(f"/channels/fresh-{n + 1}/renew") if n % 2 else None
        assert renewed is None or renewed.status_code == 404, renewed.text
        published = second.post("/publish", json={"channels": [f"fresh-{n}"], "data": n})
        assert published.status_code == 201, published.text


def test_a_publication_through_any_node_reaches_polls_on_every_node(
    nats_cluster: list[NatsServer], server_factory: ServerFactory, pool: ThreadPoolExecutor
) -> None:
    nodes = nodes_on(server_factory, nats_cluster, 3)
    clients = [node.client() for node in nodes]
    channel = clients[0].post("/channels", json={"name": "everywhere"}).json()["id"]
    cursor = (
        clients[0].get("/subscribe", params={"channels": channel, "timeout": 0}).json()["cursor"]
    )
    for n, publisher in enumerate(clients):
        polls = [
            pool.submit(
                client.get,
                "/subscribe",
                params={"channels": channel, "since": cursor, "timeout": 60},
                timeout=90,
            )
            for client in clients
        ]
        wait_for(
            lambda: clients[0].get(f"/channels/{channel}").json()["subscribers"] == 3,
            timeout=DEADLINE_S,
            what="a poll parked on every node",
        )
        published = publisher.post("/publish", json={"channels": ["everywhere"], "data": n})
        assert published.status_code == 201, published.text
        message_id = published.json()["id"]
        for poll in polls:
            response = poll.result(timeout=DEADLINE_S)
            assert response.status_code == 200, response.text
            assert [(m["id"], m["data"]) for m in response.json()["messages"]] == [(message_id, n)]
        cursor = message_id


async def test_a_nats_server_killed_while_clients_publish_and_poll_costs_no_one_a_message(
    nats_cluster: list[NatsServer], server_factory: ServerFactory
) -> None:
    nodes = nodes_on(server_factory, nats_cluster, 2)
    rng = random.Random(23)
    timeout = aiohttp.ClientTimeout(total=30)
    sessions = [
        aiohttp.ClientSession(node.url, timeout=timeout, connector=aiohttp.TCPConnector(limit=0))
        for node in nodes
    ]
    try:
        channels = []
        for _ in range(balanced.N_CHANNELS):
            async with sessions[0].post("/channels") as resp:
                assert resp.status == 201, await resp.text()
                channels.append((await resp.json())["id"])
        subscribers = [
            no_loss.Subscriber(index, frozenset(chosen), list(chosen))
            for index in range(balanced.N_SUBSCRIBERS)
            for chosen in [rng.sample(channels, rng.randint(1, 2))]
        ]
        done = asyncio.Event()
        targets: dict[int, int | None] = {}
        errors: list[str] = []
        # Half the subscribers poll one node, half the other.
        polling = [
            asyncio.create_task(
                balanced._resilient_subscriber(
                    sessions[sub.index % 2], sub, random.Random(rng.random()), done, targets, errors
                )
            )
            for sub in subscribers
        ]
        acknowledged: list[no_loss.Published] = []
        uncertain: list[Any] = []
        publishing = asyncio.create_task(
            _publisher(sessions[1], channels, random.Random(rng.random()), acknowledged, uncertain)
        )
        try:
            await until(at_least(acknowledged, balanced.N_MESSAGES // 3), timeout=DEADLINE_S * 2)
            killed_at = len(acknowledged)
            nats_cluster[0].kill()
            async with asyncio.timeout(no_loss.PUBLISH_DEADLINE_S * 2):
                await publishing
            # The nodes kept serving: most of what came after the kill went through.
            assert len(acknowledged) - killed_at > balanced.N_MESSAGES // 3, uncertain
            # Read from the other node, once it has followed the stream to the end (it
            # reads its own copy, which lags while its consumer moves to a live server).
            stored: list[no_loss.Published] = []

            async def caught_up() -> bool:
                stored[:] = await balanced._stored(sessions[0], channels)
                ids = {m.id for m in stored}
                return all(m.id in ids for m in acknowledged)

            await until(caught_up, timeout=DEADLINE_S, interval=0.2, what="node 0 to catch up")
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
    finally:
        for session in sessions:
            await session.close()
    for sub in subscribers:
        no_loss._check(sub, stored)


async def _publisher(
    session: aiohttp.ClientSession,
    channels: list[int],
    rng: random.Random,
    acknowledged: list[no_loss.Published],
    uncertain: list[Any],
) -> None:
    """As the balanced test's publisher (an unanswered publication is uncertain, never
    retried), but one that waits a little after a failure, as a client would."""
    for seq in range(balanced.N_MESSAGES):
        targets = rng.sample(channels, rng.randint(1, balanced.N_CHANNELS))
        data = {"seq": seq}
        try:
            async with session.post("/publish", json={"channels": targets, "data": data}) as resp:
                if resp.status in balanced.RETRY_STATUSES:
                    uncertain.append(data)
                    await asyncio.sleep(0.1)
                    continue
                assert resp.status == 201, await resp.text()
                result = await resp.json()
        except (aiohttp.ClientError, TimeoutError):
            uncertain.append(data)
            await asyncio.sleep(0.1)
            continue
        acknowledged.append(
            no_loss.Published(int(result["id"]), result["time"], frozenset(targets), data)
        )
        await asyncio.sleep(rng.uniform(0, 0.01))


def test_a_node_that_cannot_reach_nats_stops_its_start_with_one_line() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "pushup", "serve", "--port", "0", "--engine", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0, result
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: --engine {url} cannot be used: cannot reach NATS")
    assert "Traceback" not in result.stderr


def test_a_node_whose_server_froze_is_healthy_again_by_itself(
    nats_cluster: list[NatsServer], server_factory: ServerFactory
) -> None:
    """A write through a node whose server is frozen fails (503), and `/health` says
    503 too, so a balancer sends the node nothing more: once the server thaws, the
    node must find out by itself, with no write to tell it."""
    (node,) = nodes_on(server_factory, nats_cluster, 1)
    client = node.client()
    channel = client.post("/channels").json()["id"]
    (server,) = [s for s in nats_cluster if s.connections() > 0]
    server.pause()
    try:
        frozen = client.post("/publish", json={"channels": [channel], "data": 1})
        assert frozen.status_code == 503, frozen.text
        assert client.get("/health").status_code == 503
    finally:
        server.resume()
    wait_for(
        lambda: client.get("/health").status_code == 200,
        timeout=DEADLINE_S,
        what="the node to be healthy again",
    )

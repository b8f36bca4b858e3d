"""Interest-based delivery on the NATS engine: four PushUp nodes on one JetStream
server, each with polls parked on its own quarter of the channels, and publications
spread over all channels through every node. Each node receives about a quarter of the
publications (those of the channels it serves, not the whole stream), and every
subscriber still gets every message of its channel once, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, until

NODES = 4
CHANNELS_PER_NODE = 4
PUBLICATIONS = 160
DEADLINE_S = 30.0


def engine_details(node: ServerProcess) -> dict[str, Any]:
    with node.client() as client:
        health = client.get("/health")
    assert health.status_code == 200, health.text
    details: dict[str, Any] = health.json()["engine"]
    return details


async def poll_until(
    client: httpx.AsyncClient, channel: str, count: int, cursor: str | None
) -> list[int]:
    """Poll one channel with its cursor until `count` messages came; their data."""
    got: list[int] = []
    while len(got) < count:
        params = {"channels": channel, "timeout": "20"}
        if cursor is not None:
            params["since"] = cursor
        answer = (await client.get("/subscribe", params=params)).json()
        got += [message["data"] for message in answer["messages"]]
        cursor = answer["cursor"]
    return got


def test_each_node_receives_the_publications_of_the_channels_it_serves(
    nats_url: str, server_factory: ServerFactory
) -> None:
    nodes = [server_factory("--engine", nats_url) for _ in range(NODES)]
    names = [f"q{n}" for n in range(NODES * CHANNELS_PER_NODE)]
    with nodes[0].client() as creator:
        for name in names:
            assert creator.post("/channels", json={"name": name}).status_code == 201
    # Node n serves channels q{n}, q{n + 4}, ...: its polls park there.
    served = {name: nodes[i % NODES] for i, name in enumerate(names)}
    per_channel = PUBLICATIONS // len(names)

    async def scenario() -> dict[str, list[int]]:
        clients = {node.port: httpx.AsyncClient(base_url=node.url, timeout=60.0) for node in nodes}
        try:
            cursors = {}
            for name in names:
                answer = await clients[served[name].port].get(
                    "/subscribe", params={"channels": name, "timeout": "0"}
                )
                cursors[name] = answer.json()["cursor"]
            polls = {
                name: asyncio.create_task(
                    poll_until(clients[served[name].port], name, per_channel, cursors[name])
                )
                for name in names
            }
            for node in nodes:
                await until(
                    lambda node=node: _is(engine_details(node)["served_channels"] == 4),
                    timeout=DEADLINE_S,
                    what="every node to serve its channels",
                )
            # Publications spread over all channels, each through any node.
            for n in range(PUBLICATIONS):
                client = clients[nodes[n % NODES].port]
                answer = await client.post(
                    "/publish", json={"channels": [names[n % len(names)]], "data": n}
                )
                assert answer.status_code == 201, answer.text
            async with asyncio.timeout(DEADLINE_S):
                return {name: await poll for name, poll in polls.items()}
        finally:
            for client in clients.values():
                await client.aclose()

    got = asyncio.run(scenario())
    for i, name in enumerate(names):
        assert got[name] == list(range(i, PUBLICATIONS, len(names))), name
    received = [engine_details(node)["received_publications"] for node in nodes]
    for count in received:
        assert 0.15 * PUBLICATIONS <= count <= 0.40 * PUBLICATIONS, received


async def _is(value: bool) -> bool:
    return value

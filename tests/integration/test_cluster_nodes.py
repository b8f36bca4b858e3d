"""Nodes on one Redis (or one NATS, for the count) know of each other: `GET
/channels/{id}` counts the polls parked on every live node (each node keeps a heartbeat
and answers the others' questions), says how many nodes it counted, and `/health`
answers 503 while Redis is out of reach."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import RedisFactory, ServerFactory
from tests.helpers import ServerProcess, wait_for

Json = dict[str, Any]
DEADLINE_S = 15.0
LONG_POLL_S = 100


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=8)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


def three_nodes(server_factory: ServerFactory, url: str) -> list[ServerProcess]:
    return [server_factory("--engine", url) for _ in range(3)]


def park(pool: ThreadPoolExecutor, client: httpx.Client, channel: int) -> Future[httpx.Response]:
    params = {"channels": channel, "timeout": LONG_POLL_S}
    return pool.submit(client.get, "/subscribe", params=params, timeout=LONG_POLL_S + 30)


def info(client: httpx.Client, channel: int) -> Json:
    response = client.get(f"/channels/{channel}")
    assert response.status_code == 200, response.text
    body: Json = response.json()
    return body


def test_channel_info_counts_the_polls_parked_on_every_node(
    server_factory: ServerFactory, shared_url: str, pool: ThreadPoolExecutor
) -> None:
    a, b, c = three_nodes(server_factory, shared_url)
    on_a, on_b, on_c = a.client(), b.client(), c.client()
    channel = on_a.post("/channels").json()["id"]
    polls = [park(pool, on_b, channel), park(pool, on_b, channel), park(pool, on_c, channel)]
    # Asked on A, which holds none of them.
    wait_for(lambda: info(on_a, channel)["subscribers"] == 3, timeout=DEADLINE_S, what="3 polls")
    body = info(on_a, channel)
    assert body["local_subscribers"] == 0
    assert body["nodes"] == {"live": 3, "counted": 3}
    for client, local in ((on_b, 2), (on_c, 1)):
        body = info(client, channel)
        assert (body["subscribers"], body["local_subscribers"]) == (3, local)
        assert body["nodes"] == {"live": 3, "counted": 3}

    published = on_a.post("/publish", json={"channels": [channel], "data": "all"})
    assert published.status_code == 201, published.text
    for poll in polls:
        response = poll.result(timeout=DEADLINE_S)
        assert [m["data"] for m in response.json()["messages"]] == ["all"]
    assert info(on_a, channel)["subscribers"] == 0

    # A node that stops leaves the count at once, not a few heartbeats later.
    c.stop()
    assert info(on_a, channel)["nodes"] == {"live": 2, "counted": 2}


def test_a_node_that_does_not_answer_in_time_is_left_out_and_said_to_be(
    server_factory: ServerFactory, redis_url: str, pool: ThreadPoolExecutor
) -> None:
    a, b, c = three_nodes(server_factory, redis_url)
    on_a, on_b, on_c = a.client(), b.client(), c.client()
    channel = on_a.post("/channels").json()["id"]
    park(pool, on_b, channel)
    park(pool, on_c, channel)
    wait_for(lambda: info(on_a, channel)["subscribers"] == 2, timeout=DEADLINE_S, what="2 polls")
    silent = on_c.get("/health").json()["engine"]["node"]
    c.proc.send_signal(signal.SIGSTOP)  # alive, subscribed, but deaf
    try:
        # Keep it live by its heartbeat however long this takes, as a node that hangs
        # between two heartbeats is.
        with redis.Redis.from_url(redis_url) as client:
            seconds, micros = client.time()
            client.zadd("pushup:nodes", {silent: seconds + micros / 1e6 + 60})
        started = time.monotonic()
        body = info(on_a, channel)
        elapsed = time.monotonic() - started
        assert body["subscribers"] == 1, body  # B's: C did not answer
        assert body["nodes"] == {"live": 3, "counted": 2}
        assert elapsed < 5, f"the count waited {elapsed:.1f}s for a node that cannot answer"
    finally:
        c.proc.send_signal(signal.SIGCONT)
    wait_for(
        lambda: info(on_a, channel)["nodes"] == {"live": 3, "counted": 3},
        timeout=DEADLINE_S,
        what="C to answer again",
    )
    assert info(on_a, channel)["subscribers"] == 2


def test_the_embedded_engine_counts_this_process_only(server: ServerProcess) -> None:
    client = server.client()
    channel = client.post("/channels").json()["id"]
    body = info(client, channel)
    assert body["subscribers"] == 0
    assert "nodes" not in body and "local_subscribers" not in body
    assert client.get("/health").json() == {"status": "ok"}


def test_health_is_503_naming_the_engine_state_while_redis_is_down(
    server_factory: ServerFactory, redis_factory: RedisFactory
) -> None:
    store = redis_factory()
    node = server_factory("--engine", store.url)
    client = node.client()
    healthy = client.get("/health")
    assert healthy.status_code == 200, healthy.text
    engine = healthy.json()["engine"]
    assert healthy.json()["status"] == "ok"
    assert (engine["kind"], engine["state"], engine["live_nodes"]) == ("redis", "reachable", 1)
    assert isinstance(engine["node"], str) and engine["node"]

    store.kill()

    def down() -> httpx.Response | None:
        response = client.get("/health")
        return response if response.status_code == 503 else None

    body = wait_for(down, timeout=DEADLINE_S, what="/health to say Redis is down").json()
    assert body["error"] == "engine_unavailable" and isinstance(body["detail"], str)
    engine = body["engine"]
    assert (engine["kind"], engine["state"]) == ("redis", "unreachable")
    assert isinstance(engine["reason"], str) and engine["reason"]
    assert engine["since"] <= time.time()

    store.start()  # the same port
    wait_for(
        lambda: client.get("/health").status_code == 200,
        timeout=DEADLINE_S,
        what="/health to recover with Redis",
    )
    assert client.get("/health").json()["engine"]["state"] == "reachable"


def test_every_redis_node_hears_every_publication(
    server_factory: ServerFactory, redis_factory: RedisFactory
) -> None:
    """What a Redis cluster's inbound traffic follows (and the NATS engine's interest
    avoids): each node counts every publication in `/health`, wherever it was made."""
    store = redis_factory()
    node_a, node_b = (server_factory("--engine", store.url) for _ in range(2))
    on_a, on_b = node_a.client(), node_b.client()

    def heard(client: httpx.Client) -> int:
        return int(client.get("/health").json()["engine"]["received_publications"])

    before = [heard(on_a), heard(on_b)]
    channel = on_a.post("/channels", json={}).json()["id"]
    for n in range(5):
        response = on_a.post("/publish", json={"channels": [channel], "data": n})
        assert response.status_code == 201, response.text
    wait_for(
        lambda: [heard(on_a) - before[0], heard(on_b) - before[1]] == [5, 5],
        timeout=DEADLINE_S,
        what="both nodes to count the 5 publications",
    )

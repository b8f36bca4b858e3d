"""Redis goes away and comes back: publishers get 503 meanwhile, never a silent drop or
a hang; the nodes recover by themselves, and a poll parked across the outage still gets
what is published after it. With AOF (fsync on every write), no acknowledged message
is lost, even to a kill -9 of Redis."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import RedisFactory, ServerFactory
from tests.helpers import wait_for

DEADLINE_S = 20.0


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=4)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


def test_nodes_answer_503_while_redis_is_down_and_recover_without_restart(
    server_factory: ServerFactory, redis_factory: RedisFactory, pool: ThreadPoolExecutor
) -> None:
    store = redis_factory("--appendonly", "yes", "--appendfsync", "always")
    a = server_factory("--engine", store.url)
    b = server_factory("--engine", store.url)
    on_a, on_b = a.client(), b.client()
    channel = on_a.post("/channels", json={"name": "outage"}).json()["id"]
    acknowledged = []
    for i in range(5):
        response = on_b.post("/publish", json={"channels": [channel], "data": i})
        assert response.status_code == 201, response.text
        acknowledged.append(response.json()["id"])

    parked = pool.submit(
        on_a.get,
        "/subscribe",
        params={"channels": channel, "since": acknowledged[-1], "timeout": 120},
        timeout=150,
    )
    wait_for(
        lambda: on_a.get(f"/channels/{channel}").json()["subscribers"] == 1,
        timeout=DEADLINE_S,
        what="the poll to park on A",
    )

    store.kill()
    down = on_b.post("/publish", json={"channels": [channel], "data": "dropped?"})
    assert down.status_code == 503, down.text
    assert down.json()["error"] == "engine_unavailable"
    assert isinstance(down.json()["detail"], str)
    assert down.headers["retry-after"] == "1"
    assert on_b.get("/subscribe", params={"channels": channel, "timeout": 0}).status_code == 503
    assert on_a.post("/channels").status_code == 503
    assert not parked.done(), "the parked poll must wait out the outage, not fail"

    store.start()  # the same port, its AOF replayed

    def publish_after_recovery() -> str | None:
        response = on_b.post("/publish", json={"channels": ["outage"], "data": "after"})
        if response.status_code == 503:
            return None  # not stored: retried until Redis answers
        assert response.status_code == 201, response.text
        message_id: str = response.json()["id"]
        return message_id

    after = wait_for(publish_after_recovery, timeout=DEADLINE_S, what="B to recover")
    response = parked.result(timeout=DEADLINE_S)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [m["id"] for m in body["messages"]] == [after]
    assert body["messages"][0]["data"] == "after"

    # Nothing acknowledged was lost, and the 503 stored nothing.
    for client in (on_a, on_b):
        every = client.get("/subscribe", params={"channels": channel, "timeout": 0}).json()
        assert [m["id"] for m in every["messages"]] == [*acknowledged, after]
        assert every["gap"] is False

    # A's own connections came back too: it publishes and B's polls hear it.
    again = pool.submit(
        on_b.get, "/subscribe", params={"channels": channel, "since": after, "timeout": 120}
    )
    wait_for(
        lambda: on_b.get(f"/channels/{channel}").json()["subscribers"] == 1,
        timeout=DEADLINE_S,
        what="the poll to park on B",
    )
    last = on_a.post("/publish", json={"channels": [channel], "data": "last"})
    assert last.status_code == 201, last.text
    assert [m["id"] for m in again.result(timeout=DEADLINE_S).json()["messages"]] == [
        last.json()["id"]
    ]
    for server in (a, b):
        log = server.log()
        assert "lost the Redis event connection" in log, log
        assert "Redis events are back" in log, log


def test_a_poll_on_a_node_whose_redis_is_down_gets_503_not_a_hang(
    server_factory: ServerFactory, redis_factory: RedisFactory
) -> None:
    store = redis_factory()
    node = server_factory("--engine", store.url)
    client = node.client()
    channel = client.post("/channels").json()["id"]
    store.kill()
    response = client.get(
        "/subscribe", params={"channels": channel, "timeout": 30}, timeout=httpx.Timeout(20.0)
    )
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "engine_unavailable"

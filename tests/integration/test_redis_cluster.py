"""Several `pushup serve --engine redis://...` nodes on one Redis behave as one server:
a channel made on one is used through another, and parked polls on every node hear of
publications, closes and expiry wherever they happen."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import aiohttp
import httpx
import pytest
import redis

from tests.conftest import RedisFactory, ServerFactory
from tests.helpers import ServerProcess, wait_for
from tests.integration import test_no_loss as no_loss

Json = dict[str, Any]
LONG_POLL_S = 100
DEADLINE_S = 15.0


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=8)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


def nodes(server_factory: ServerFactory, url: str, count: int, *flags: str) -> list[ServerProcess]:
    return [server_factory("--engine", url, *flags) for _ in range(count)]


def create(client: httpx.Client, **body: Any) -> int:
    response = client.post("/channels", json=body)
    assert response.status_code == 201, response.text
    channel: int = response.json()["id"]
    return channel


def publish(client: httpx.Client, channels: list[int | str], data: Any) -> Json:
    response = client.post("/publish", json={"channels": channels, "data": data})
    assert response.status_code == 201, response.text
    body: Json = response.json()
    return body


def park(
    pool: ThreadPoolExecutor, client: httpx.Client, channels: list[int | str], **params: Any
) -> Future[httpx.Response]:
    """A long poll in a thread; the future holds its response."""
    params = {"channels": ",".join(map(str, channels)), "timeout": LONG_POLL_S, **params}
    return pool.submit(client.get, "/subscribe", params=params, timeout=LONG_POLL_S + 30)


def wait_parked(client: httpx.Client, channel: int, count: int = 1) -> None:
    """Wait until this node holds the poll(s) (`subscribers` counts every node's)."""
    wait_for(
        lambda: client.get(f"/channels/{channel}").json()["local_subscribers"] == count,
        timeout=DEADLINE_S,
        what=f"{count} parked poll(s)",
    )


def test_a_poll_parked_on_one_node_gets_a_publication_made_through_another(
    server_factory: ServerFactory, redis_url: str, pool: ThreadPoolExecutor
) -> None:
    a, b = nodes(server_factory, redis_url, 2)
    on_a, on_b = a.client(), b.client()
    channel = create(on_a, name="tag:c++")
    parked = park(pool, on_a, [channel])
    wait_parked(on_a, channel)
    published = publish(on_b, ["tag:c++"], {"hello": "cluster"})
    assert published["channels"] == [channel]
    response = parked.result(timeout=DEADLINE_S)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [m["id"] for m in body["messages"]] == [published["id"]]
    assert body["messages"][0]["data"] == {"hello": "cluster"}
    assert body["cursor"] == published["id"]
    # Every node tells the same channel state.
    for client in (on_a, on_b):
        info = client.get("/channels/tag:c%2B%2B").json()
        assert (info["id"], info["messages"]) == (channel, 1)
        assert info["last_message_id"] == published["id"]


def test_a_cursor_from_one_node_is_good_on_another(
    server_factory: ServerFactory, redis_url: str
) -> None:
    a, b = nodes(server_factory, redis_url, 2)
    on_a, on_b = a.client(), b.client()
    channel = create(on_a)
    first = publish(on_a, [channel], 1)
    body = on_a.get("/subscribe", params={"channels": channel, "timeout": 0}).json()
    assert body["cursor"] == first["id"]
    # Nothing again, and what follows, wherever the client polls next.
    again = on_b.get(
        "/subscribe", params={"channels": channel, "timeout": 0, "since": body["cursor"]}
    ).json()
    assert again["messages"] == [] and int(again["cursor"]) >= int(first["id"])
    second = publish(on_b, [channel], 2)
    after = on_a.get(
        "/subscribe", params={"channels": channel, "timeout": 0, "since": again["cursor"]}
    ).json()
    assert [m["id"] for m in after["messages"]] == [second["id"]]


def test_names_are_unique_across_nodes(server_factory: ServerFactory, redis_url: str) -> None:
    a, b = nodes(server_factory, redis_url, 2)
    on_a, on_b = a.client(), b.client()
    create(on_a, name="only-one")
    taken = on_b.post("/channels", json={"name": "only-one"})
    assert taken.status_code == 409, taken.text
    assert taken.json()["error"] == "name_taken"


def test_closing_through_one_node_answers_410_to_polls_parked_on_another(
    server_factory: ServerFactory, redis_url: str, pool: ThreadPoolExecutor
) -> None:
    a, b = nodes(server_factory, redis_url, 2)
    on_a, on_b = a.client(), b.client()
    closing = create(on_b)
    staying = create(on_b)
    parked = park(pool, on_a, [staying, closing])
    wait_parked(on_a, closing)
    assert on_b.delete(f"/channels/{closing}").status_code == 204
    response = parked.result(timeout=DEADLINE_S)
    assert response.status_code == 410, response.text
    assert response.json()["error"] == "channel_closed"
    assert response.json()["channels"] == [closing]
    assert on_a.get(f"/channels/{closing}").status_code == 404


def test_expiry_wakes_polls_parked_on_every_node(
    server_factory: ServerFactory, redis_url: str, pool: ThreadPoolExecutor
) -> None:
    a, b = nodes(server_factory, redis_url, 2)
    on_a, on_b = a.client(), b.client()
    channel = create(on_a, ttl=100)
    parked = [park(pool, on_a, [channel]), park(pool, on_b, [channel])]
    wait_parked(on_a, channel)
    wait_parked(on_b, channel)
    # Only now a short TTL: both polls are parked when the channel expires.
    assert on_b.post(f"/channels/{channel}/renew", json={"ttl": 0.5}).status_code == 200
    for future in parked:
        response = future.result(timeout=DEADLINE_S)
        assert response.status_code == 410, response.text
        assert response.json()["channels"] == [channel]
    assert "Traceback" not in a.log() + b.log()


async def test_no_message_is_lost_or_repeated_across_nodes(
    server_factory: ServerFactory, redis_url: str
) -> None:
    """The core's randomized no-loss workload, with every request sent to a random one
    of three nodes: publishers and subscribers hop between nodes between requests."""
    servers = nodes(server_factory, redis_url, 3)
    await _run_across(servers, seed=7)


class _AnyNode:
    """Quacks like an aiohttp session; each request goes to a random node."""

    def __init__(self, sessions: list[aiohttp.ClientSession], rng: random.Random) -> None:
        self._sessions = sessions
        self._rng = rng

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self._rng.choice(self._sessions).get(*args, **kwargs)

    def post(self, *args: Any, **kwargs: Any) -> Any:
        return self._rng.choice(self._sessions).post(*args, **kwargs)


async def _run_across(servers: list[ServerProcess], seed: int) -> None:
    rng = random.Random(seed)
    timeout = aiohttp.ClientTimeout(total=30)
    sessions = [
        aiohttp.ClientSession(s.url, connector=aiohttp.TCPConnector(limit=0), timeout=timeout)
        for s in servers
    ]
    try:
        session: Any = _AnyNode(sessions, random.Random(rng.random()))
        channels = await no_loss._create_channels(session, seed, rng)
        subscribers = []
        for index in range(no_loss.N_SUBSCRIBERS):
            chosen = rng.sample(channels, rng.randint(1, 3))
            subscribers.append(
                no_loss.Subscriber(
                    index, frozenset(c.id for c in chosen), [c.ref(rng) for c in chosen]
                )
            )
        published: list[no_loss.Published] = []
        done = asyncio.Event()
        targets: dict[int, int | None] = {}
        sub_tasks = [
            asyncio.create_task(
                no_loss._subscriber(
                    _AnyNode(sessions, random.Random(rng.random())),  # type: ignore[arg-type]
                    sub,
                    random.Random(rng.random()),
                    done,
                    targets,
                )
            )
            for sub in subscribers
        ]
        pub_tasks = [
            asyncio.create_task(
                no_loss._publisher(
                    _AnyNode(sessions, random.Random(rng.random())),  # type: ignore[arg-type]
                    number,
                    random.Random(rng.random()),
                    channels,
                    published,
                )
            )
            for number in range(no_loss.N_PUBLISHERS)
        ]
        try:
            async with asyncio.timeout(no_loss.PUBLISH_DEADLINE_S):
                await asyncio.gather(*pub_tasks)
            published.sort(key=lambda m: m.id)
            assert len({m.id for m in published}) == len(published), "a message id was reused"
            for sub in subscribers:
                mine = [m.id for m in published if m.channels & sub.channels]
                targets[sub.index] = mine[-1] if mine else None
            done.set()
            async with asyncio.timeout(no_loss.DRAIN_DEADLINE_S):
                await asyncio.gather(*sub_tasks)
        finally:
            for task in [*sub_tasks, *pub_tasks]:
                task.cancel()
            await asyncio.gather(*sub_tasks, *pub_tasks, return_exceptions=True)
    finally:
        for s in sessions:
            await s.close()
    for sub in subscribers:
        no_loss._check(sub, published)
    assert all(sub.polls > 1 for sub in subscribers)


# -- choosing the engine -----------------------------------------------------------------


def _pushup(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pushup", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "url", ["nope://x", "redis://", "redis://host:notaport/0", "redis://h/db", "memory://x"]
)
def test_a_bad_engine_url_is_a_usage_error(url: str) -> None:
    result = _pushup("serve", "--engine", url)
    assert result.returncode == 2, result
    assert (
        "engine must be memory://, redis://host:port/db, "
        "redis+sentinel://host:port[,host:port...]/service[/db] or nats://host:port[,host:port...]"
        in result.stderr
    )


def test_the_engine_comes_from_the_environment_and_an_unreachable_redis_stops_the_start(
    redis_factory: RedisFactory,
) -> None:
    gone = redis_factory()
    gone.kill()
    started = time.monotonic()
    result = _pushup("serve", "--port", "0", env={"PUSHUP_ENGINE": gone.url})
    assert result.returncode == 1, result
    assert "cannot reach Redis" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 25


def test_the_engine_flag_selects_redis(server_factory: ServerFactory, redis_url: str) -> None:
    server = server_factory(env={"PUSHUP_ENGINE": redis_url})
    channel = create(server.client(), name="in-redis")
    with redis.Redis.from_url(redis_url) as client:
        assert client.hget("pushup:names", "in-redis") == str(channel).encode()

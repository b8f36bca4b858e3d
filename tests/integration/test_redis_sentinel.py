"""The Redis engine behind Redis Sentinel, for real: a master, its replica and three
Sentinels (tests/redissentinel.py), PushUp nodes given `--engine redis+sentinel://...`,
and the master killed with SIGKILL. The Sentinels promote the replica; the nodes find
it by themselves, answer 503 meanwhile (never another error, never a lost
acknowledgement), and serve again, their event connections moved to the new master."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, until, wait_for
from tests.proxies import free_port
from tests.redissentinel import SentinelGroup

# From the kill to serving again: the Sentinels need a few seconds (1 s to call the
# master down, a vote, a promotion); a failed vote is retried after 6 s.
FAILOVER_DEADLINE_S = 40.0


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    started = SentinelGroup(tmp_path)
    try:
        started.start()
        yield started
    finally:
        started.stop()


def healthy(server: ServerProcess) -> bool:
    try:
        return httpx.get(f"{server.url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


async def publish(client: httpx.AsyncClient, channel: int, data: object) -> httpx.Response:
    return await client.post("/publish", json={"channels": [channel], "data": data})


async def everything(client: httpx.AsyncClient, channel: int) -> list[object]:
    """The data of every message the channel holds, in order."""
    answer = await client.get("/subscribe", params={"channels": channel, "timeout": 0})
    assert answer.status_code == 200, answer.text
    return [m["data"] for m in answer.json()["messages"]]


async def test_nodes_follow_a_failover_and_keep_what_was_replicated(
    group: SentinelGroup, server_factory: ServerFactory
) -> None:
    # One node given the URL as a flag, the other as its variable.
    nodes = [
        server_factory("--engine", group.url()),
        server_factory(env={"PUSHUP_ENGINE": group.url()}),
    ]
    a, b = (httpx.AsyncClient(base_url=n.url, timeout=30.0) for n in nodes)
    async with a, b:
        created = await a.post("/channels")
        assert created.status_code == 201, created.text
        channel = created.json()["id"]
        acknowledged: list[object] = []
        for n in range(6):
            answer = await publish((a, b)[n % 2], channel, n)
            assert answer.status_code == 201, answer.text
            acknowledged.append(n)
        assert await everything(b, channel) == acknowledged
        group.replicate_everything()

        group.master.kill()
        killed_at = time.monotonic()
        # Publications during the switch are refused with 503 (never stored silently,
        # never another error) until a node reaches the new master.
        refused = 0
        while True:
            answer = await publish(a, channel, "after")
            if answer.status_code == 201:
                acknowledged.append("after")
                break
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"] == "engine_unavailable"
            refused += 1
            assert time.monotonic() - killed_at < FAILOVER_DEADLINE_S, group.logs()
            await asyncio.sleep(0.2)
        assert refused > 0, "a publication was acknowledged by a master killed a moment ago"
        # The Sentinels that did not run the failover hear of it within a few seconds.
        agreed = wait_for(group.master_port, timeout=15.0, what="the Sentinels to agree")
        assert agreed == group.replica.port
        for node in nodes:
            wait_for(lambda node=node: healthy(node), timeout=15.0, what="the node's health")

        # What was acknowledged, replicated before the kill or written to the new
        # master after it, is read through either node.
        assert await everything(a, channel) == acknowledged
        assert await everything(b, channel) == acknowledged

        # Node B's event connection moved to the new master too: its parked poll is
        # woken by a publication made through node A, long before its timeout.
        cursor = (await b.get("/subscribe", params={"channels": channel, "timeout": 0})).json()[
            "cursor"
        ]
        poll = asyncio.create_task(
            b.get("/subscribe", params={"channels": channel, "since": cursor, "timeout": 20})
        )
        await until(lambda: _parked(nodes[1], channel), timeout=10.0, what="a parked poll")
        started = time.monotonic()
        answer = await publish(a, channel, "woken")
        assert answer.status_code == 201, answer.text
        woken = await poll
        assert [m["data"] for m in woken.json()["messages"]] == ["woken"]
        assert time.monotonic() - started < 5.0


def serve_alone(url: str) -> str:
    """Start `pushup serve` on `url`, which it cannot use: its one line of error."""
    result = subprocess.run(
        [sys.executable, "-m", "pushup", "serve", "--port", "0", "--engine", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_no_sentinel_in_reach_is_one_line_without_the_password() -> None:
    down = [free_port(), free_port()]
    url = f"redis+sentinel://:hunter2@127.0.0.1:{down[0]},127.0.0.1:{down[1]}/pushup"
    line = serve_alone(url)
    shown = url.replace(":hunter2@", "")
    assert line.startswith(
        f"Error: --engine {shown} cannot be used: cannot reach Redis: "
        "no Sentinel names a master of 'pushup' that is up "
        f"(127.0.0.1:{down[0]}: Error 111 connecting"
    ), line
    assert "hunter2" not in line


def test_a_service_no_sentinel_monitors_is_named(group: SentinelGroup) -> None:
    line = serve_alone(group.url().replace("/pushup/", "/other/"))
    assert f"127.0.0.1:{group.sentinels[0].port}: monitors no 'other'" in line, line


async def _parked(node: ServerProcess, channel: int) -> bool:
    async with httpx.AsyncClient(base_url=node.url, timeout=5.0) as client:
        answer = await client.get(f"/channels/{channel}")
    return answer.status_code == 200 and answer.json()["subscribers"] >= 1


async def test_with_wait_a_write_is_acknowledged_once_a_replica_has_it(
    group: SentinelGroup, server_factory: ServerFactory
) -> None:
    waiting = server_factory("--engine", group.url(wait="1", wait_timeout="0.5"))
    plain = server_factory("--engine", group.url())
    w, p = (httpx.AsyncClient(base_url=n.url, timeout=30.0) for n in (waiting, plain))
    async with w, p:
        created = await w.post("/channels")
        assert created.status_code == 201, created.text
        channel = created.json()["id"]
        assert (await publish(w, channel, "confirmed")).status_code == 201
        replica = group.replica.proc
        assert replica is not None
        replica.send_signal(signal.SIGSTOP)
        try:
            # The replica hangs: the master takes the write, no replica confirms it.
            started = time.monotonic()
            answer = await publish(w, channel, "unconfirmed")
            assert answer.status_code == 503, answer.text
            assert "not yet confirmed by the store's replicas" in answer.json()["detail"]
            assert time.monotonic() - started < 4.0
            # Without `wait`, the master's word is enough.
            assert (await publish(p, channel, "unreplicated")).status_code == 201
        finally:
            replica.send_signal(signal.SIGCONT)
        assert (await publish(w, channel, "confirmed again")).status_code == 201
        # A master that takes no writes without two replicas in sync: a 503 that
        # promises nothing was done, through the WAIT pipeline as without it.
        with group.master.client() as client:
            client.config_set("min-replicas-to-write", 2)
        try:
            for node in (w, p):
                answer = await publish(node, channel, "refused")
                assert answer.status_code == 503, answer.text
                assert "unreachable" in answer.json()["detail"]
        finally:
            with group.master.client() as client:
                client.config_set("min-replicas-to-write", 0)
        # The unconfirmed write is stored all the same: a 503 here is no promise that
        # nothing was done, which is why it says a retry may store it twice.
        assert await everything(p, channel) == [
            "confirmed",
            "unconfirmed",
            "unreplicated",
            "confirmed again",
        ]

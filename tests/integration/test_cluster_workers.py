"""`pushup serve --workers N`: N processes on one port share the Redis (or NATS) engine, a worker
that dies is restarted, and SIGTERM stops them all. (Without --engine, the workers share
a private nats-server: test_workers_nats.py.)"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import httpx
import pytest

from pushup.config import Settings
from pushup.supervisor import Supervisor
from tests.conftest import RedisFactory, ServerFactory
from tests.helpers import ServerProcess, until, wait_for
from tests.workerprocs import (
    DEADLINE_S,
    alive,
    children,
    get,
    pool,
    spread,
    start_workers,
    supervisors,
    worker_pids,
    workers_of,
)

__all__ = ["pool", "supervisors"]  # fixtures


# -- the tests ----------------------------------------------------------------------------


def test_workers_share_the_port_and_hear_each_others_publications(
    supervisors: list[ServerProcess], shared_url: str, pool: ThreadPoolExecutor
) -> None:
    server = start_workers(supervisors, "--workers", "2", "--engine", shared_url)
    a, b = worker_pids(server)
    held = spread(server, [a, b], {a: 2, b: 1})
    (on_a, also_on_a), on_b = held[a][:2], held[b][0]
    channel = server.client().post("/channels").json()["id"]
    _, now = get(on_a, f"/subscribe?channels={channel}&timeout=0")

    parked = pool.submit(get, on_a, f"/subscribe?channels={channel}&since={now['cursor']}")
    wait_for(
        lambda: get(also_on_a, f"/channels/{channel}")[1]["local_subscribers"] == 1,
        timeout=DEADLINE_S,
        what="the poll to park on worker A",
    )
    # Each process holds its own polls: B holds none, so it is another server; it
    # counts A's all the same, as every node of one Redis does.
    info = get(on_b, f"/channels/{channel}")[1]
    assert (info["local_subscribers"], info["subscribers"]) == (0, 1)

    on_b.request("POST", "/publish", body=json.dumps({"channels": [channel], "data": "to A"}))
    published = on_b.getresponse()
    assert published.status == 201
    message_id = json.loads(published.read())["id"]
    status, body = parked.result(timeout=DEADLINE_S)
    assert status == 200, body
    assert [(m["id"], m["data"]) for m in body["messages"]] == [(message_id, "to A")]
    for conns in held.values():
        for conn in conns:
            conn.close()


def test_a_killed_worker_is_restarted_and_the_port_keeps_serving(
    supervisors: list[ServerProcess], redis_url: str
) -> None:
    server = start_workers(supervisors, "--workers", "2", "--engine", redis_url)
    victim, survivor = worker_pids(server)
    os.kill(victim, signal.SIGKILL)
    # Once it is gone (its socket closed with it; only connections it had already taken
    # were lost), the survivor takes every new connection until the restart.
    wait_for(lambda: not alive(victim), timeout=DEADLINE_S, what="the worker to die")
    for _ in range(10):
        assert httpx.get(f"{server.url}/health", timeout=5.0).status_code == 200

    def replaced() -> list[int] | None:
        pids = workers_of(server.proc.pid)
        return pids if len(pids) == 2 and victim not in pids and survivor in pids else None

    (successor,) = set(wait_for(replaced, timeout=DEADLINE_S, what="a new worker")) - {survivor}
    death = re.compile(rf"worker \d \(pid {victim}\) was killed by SIGKILL .*restarting it")
    wait_for(lambda: death.search(server.log()), timeout=DEADLINE_S, what="a logged death")
    # The new worker serves too: some new connection lands on it.
    held = spread(server, [successor, survivor], {successor: 1})
    status, _ = get(held[successor][0], "/health")
    assert status == 200
    for conns in held.values():
        for conn in conns:
            conn.close()


def test_sigterm_stops_every_worker_within_a_bound(
    supervisors: list[ServerProcess], redis_url: str, pool: ThreadPoolExecutor
) -> None:
    server = start_workers(supervisors, "--workers", "2", "--engine", redis_url)
    pids = worker_pids(server)
    channel = server.client().post("/channels").json()["id"]
    polls = [
        pool.submit(
            httpx.get,
            f"{server.url}/subscribe",
            params={"channels": channel, "timeout": 100},
            timeout=60,
        )
        for _ in range(3)
    ]
    wait_for(
        lambda: (
            sum(
                httpx.get(f"{server.url}/channels/{channel}").json()["subscribers"]
                for _ in range(8)
            )
            > 0
        ),
        timeout=DEADLINE_S,
        what="polls to park",
    )
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=15) == 0
    assert time.monotonic() - started < 15
    assert not any(alive(pid) for pid in pids)
    assert "every worker has stopped" in server.log()
    # Their connections were closed, not left hanging.
    _, hanging = wait(polls, timeout=DEADLINE_S)
    assert not hanging


def test_workers_share_an_inherited_socket(server_factory: ServerFactory, redis_url: str) -> None:
    server = server_factory("--workers", "2", "--engine", redis_url)
    pids = worker_pids(server)
    held = spread(server, pids, {pid: 1 for pid in pids})
    assert "workers serving on the inherited socket" in server.log()
    for conns in held.values():
        for conn in conns:
            conn.close()


def test_workers_that_cannot_reach_redis_stop_the_start(redis_factory: RedisFactory) -> None:
    gone = redis_factory()
    gone.kill()
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pushup", "serve", "--port", "0", "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PUSHUP_ENGINE": gone.url},
    )
    output, _ = proc.communicate(timeout=40)
    assert proc.returncode == 1, output
    # Said once, by the supervisor, as a server alone would say it.
    (line,) = output.splitlines()
    assert line.startswith(f"Error: PUSHUP_ENGINE {gone.url} cannot be used: cannot reach Redis")
    assert time.monotonic() - started < 30
    assert children(proc.pid) == []


# -- the supervisor alone, with stand-in workers -------------------------------------------

# A stand-in worker: reads its spec like a real one, then behaves as `sys.argv[1]` says.
FAKE_WORKER = textwrap.dedent(
    """
    import os, pickle, signal, sys, time
    spec = pickle.load(sys.stdin.buffer)
    mode = sys.argv[1]
    if mode == "fails":
        sys.exit(1)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.write(spec["ready_fd"], b"1")
    if mode == "crashes":
        sys.exit(3)
    time.sleep(60)
    """
)


def fake(mode: str) -> list[str]:
    return [sys.executable, "-c", FAKE_WORKER, mode]


async def test_a_crash_loop_is_restarted_with_a_growing_delay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pushup.supervisor")
    supervisor = Supervisor(
        Settings(port=0),
        command=fake("crashes"),
        restart_min_s=0.1,
        restart_max_s=0.4,
        stable_s=30,
    )
    running = asyncio.create_task(supervisor.run())
    await until(_at_least(supervisor, 5), timeout=DEADLINE_S, what="five restarts")
    supervisor.stop()
    assert await asyncio.wait_for(running, DEADLINE_S) == 0
    delays = [
        float(found[1])
        for record in caplog.records
        if (
            found := re.search(r"exited with code 3 .* restarting it in ([\d.]+) s", record.message)
        )
    ]
    assert delays[:5] == [0.1, 0.2, 0.4, 0.4, 0.4]


def _at_least(supervisor: Supervisor, restarts: int) -> Any:
    async def probe() -> bool:
        return supervisor.restarts >= restarts

    return probe


async def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(Settings(port=0), command=fake("stubborn"), stop_grace_s=0.5)
    running = asyncio.create_task(supervisor.run())
    await until(_serving(supervisor), timeout=DEADLINE_S, what="the worker to serve")
    (pid,) = supervisor.pids
    started = time.monotonic()
    supervisor.stop()
    assert await asyncio.wait_for(running, DEADLINE_S) == 0
    assert time.monotonic() - started < 5
    assert not alive(pid)
    assert "killing them" in caplog.text


def _serving(supervisor: Supervisor) -> Any:
    async def probe() -> bool:
        return supervisor.serving

    return probe


async def test_a_stop_while_the_private_nats_server_starts_ends_the_run() -> None:
    supervisor = Supervisor(Settings(port=0, workers=2, data_dir=None), command=fake("sleeps"))
    running = asyncio.create_task(supervisor.run())
    while supervisor.nats is None:  # the run is now waiting for its nats-server
        await asyncio.sleep(0)
    supervisor.stop()
    assert await asyncio.wait_for(running, DEADLINE_S) == 0
    assert supervisor.nats.proc is not None
    assert supervisor.nats.proc.returncode is not None
    assert supervisor.pids == []


async def test_a_worker_that_cannot_start_ends_the_supervisor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(Settings(port=0), command=fake("fails"))
    assert await asyncio.wait_for(supervisor.run(), DEADLINE_S) == 1
    assert "worker 0 exited before serving (exited with code 1)" in caplog.text

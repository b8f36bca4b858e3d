"""`pushup serve --workers N`: N processes on one port share the Redis (or NATS) engine, a worker
that dies is restarted, and SIGTERM stops them all.

Which worker holds a connection is read from /proc (the server-side socket's inode, and
which worker has it open), so the API needs no field for it."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import httpx
import pytest

from pushup.config import Settings
from pushup.supervisor import Supervisor
from tests.conftest import RedisFactory, ServerFactory
from tests.helpers import ServerProcess, until, wait_for

DEADLINE_S = 20.0
Connections = dict[int, list[http.client.HTTPConnection]]


# -- processes and connections ------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The live child processes of `pid`, from /proc."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(child) for child in f.read().split())
        except FileNotFoundError:
            continue
    return sorted(found)


def worker_pids(supervisor: ServerProcess, count: int = 2) -> list[int]:
    def found() -> list[int] | None:
        pids = children(supervisor.proc.pid)
        return pids if len(pids) == count else None

    return wait_for(found, timeout=DEADLINE_S, what=f"{count} workers")


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def owner(conn: http.client.HTTPConnection, server_port: int, pids: list[int]) -> int | None:
    """The worker holding the server side of `conn` (whose request was answered)."""
    assert conn.sock is not None
    client_port = conn.sock.getsockname()[1]
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                local, remote = fields[1], fields[2]
                if (
                    int(local.rsplit(":", 1)[1], 16) == server_port
                    and int(remote.rsplit(":", 1)[1], 16) == client_port
                ):
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return pid
            except OSError:
                continue
    return None


def get(conn: http.client.HTTPConnection, path: str) -> tuple[int, Any]:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def spread(server: ServerProcess, pids: list[int], wanted: dict[int, int]) -> Connections:
    """Open keep-alive connections until each worker in `wanted` holds that many; the
    kernel picks the worker of each new connection."""
    held: Connections = {pid: [] for pid in pids}
    for _ in range(200):
        if all(len(held[pid]) >= n for pid, n in wanted.items()):
            return held
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        status, _ = get(conn, "/health")
        assert status == 200
        pid = owner(conn, server.port, pids)
        assert pid in held, f"a connection held by {pid}, not by a worker of {pids}"
        held[pid].append(conn)
    raise AssertionError(f"200 connections never reached every worker as {wanted}: {held}")


# -- starting supervisors -----------------------------------------------------------------


@pytest.fixture
def supervisors() -> Iterator[list[ServerProcess]]:
    """Supervisors a test starts with `start_workers`; stopped after it, and none may have
    logged a traceback."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()
    for server in started:
        assert "Traceback" not in server.log(), server.log()


def start_workers(started: list[ServerProcess], *flags: str) -> ServerProcess:
    """`pushup serve --port 0 ...`: the supervisor picks the port, and logs it."""
    with tempfile.NamedTemporaryFile(prefix="pushup-", suffix=".log", delete=False) as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pushup", "serve", "--port", "0", *flags],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(proc, 0, log.name)
    started.append(server)

    def port() -> int | None:
        if proc.poll() is not None:
            raise AssertionError(f"the supervisor exited with {proc.returncode}:\n{server.log()}")
        found = re.search(r"workers serving on http://127\.0\.0\.1:(\d+)", server.log())
        return int(found[1]) if found else None

    server.port = wait_for(port, timeout=DEADLINE_S, what="the workers to serve")
    return server


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=4)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


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
        pids = children(server.proc.pid)
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


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_more_than_one_worker_needs_redis(how: str) -> None:
    args, env = (["--workers", "2"], {}) if how == "flag" else ([], {"PUSHUP_WORKERS": "2"})
    result = subprocess.run(
        [sys.executable, "-m", "pushup", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )
    assert result.returncode == 2, result
    given_as = "--workers" if how == "flag" else "PUSHUP_WORKERS"
    assert f"{given_as} above 1 need a shared engine" in result.stderr
    assert "--engine redis://" in result.stderr


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


async def test_a_worker_that_cannot_start_ends_the_supervisor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(Settings(port=0), command=fake("fails"))
    assert await asyncio.wait_for(supervisor.run(), DEADLINE_S) == 1
    assert "worker 0 exited before serving (exited with code 1)" in caplog.text

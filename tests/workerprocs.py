"""`pushup serve --workers N` as real processes: starting a supervisor on a port of its
own, telling its workers (and its private nats-server) apart, and which worker holds a
connection, read from /proc (the server-side socket's inode, and which worker has it
open), so the API needs no field for it."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.helpers import ServerProcess, wait_for

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


def command_line(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def workers_of(pid: int) -> list[int]:
    """The supervisor's children that are workers (not its nats-server)."""
    return [child for child in children(pid) if b"pushup.worker" in command_line(child)]


def worker_pids(supervisor: ServerProcess, count: int = 2) -> list[int]:
    def found() -> list[int] | None:
        pids = workers_of(supervisor.proc.pid)
        return pids if len(pids) == count else None

    return wait_for(found, timeout=DEADLINE_S, what=f"{count} workers")


def nats_pid(supervisor: ServerProcess) -> int:
    """The supervisor's private nats-server."""

    def found() -> int | None:
        pids = children(supervisor.proc.pid)
        return next((pid for pid in pids if b"nats-server" in command_line(pid)), None)

    return wait_for(found, timeout=DEADLINE_S, what="the private nats-server")


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


def start_workers(
    started: list[ServerProcess], *flags: str, env: dict[str, str] | None = None
) -> ServerProcess:
    """`pushup serve --port 0 ...`: the supervisor picks the port, and logs it."""
    with tempfile.NamedTemporaryFile(prefix="pushup-", suffix=".log", delete=False) as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pushup", "serve", "--port", "0", *flags],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
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

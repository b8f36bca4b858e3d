"""Servers with several worker processes on one port: PushUp and Nchan.

PushUp runs `--workers N` on the Redis engine (`pushup-workers`), or on the private
nats-server its supervisor starts when no --engine is given (`pushup-workers-nats`,
as `pushup serve --workers N` runs by default). The workers bind one port with
SO_REUSEPORT (not a shared inherited socket), so the kernel spreads connections evenly
over them, and share channels and messages through a redis-server the target starts.
GET /channels/{id} answers from whichever worker got the request, and only its own count
is exact (the total over workers is best effort: a busy worker's answer may come too
late), so the target keeps one keep-alive "probe" connection to every worker and sums
their own counts. Which worker holds a probe is read from /proc: the server
side of the connection is a socket inode, and exactly one worker has it open. Probes are
made right after start, while the workers hold few descriptors, and remade the same way
if one is lost.

Nchan runs `worker_processes N` (see `pushup.bench.nchan`), its channel counts already
global. Its long polls wait a timeout fixed in nginx's configuration, and load-generator
processes build their request codec from the target's name alone, so the timeout these
targets are made for is their default: `POLL_TIMEOUT_S`, longer than connecting 100,000
subscribers takes, so that no poll times out while the others connect.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from pushup.bench.targets.nchan import NchanTarget
from pushup.bench.targets.process import free_port, stop_process, wait_until_serving
from pushup.bench.targets.pushup import PushUpTarget
from pushup.bench.targets.redis import RedisServer

POLL_TIMEOUT_S = 250.0
NCHAN_SHARED_MIB = 512  # Nchan's shared memory for channels and messages (default 128)
# Probe connections stay idle while clients connect, which can take minutes at 100,000.
KEEPALIVE_S = 3600


class WorkersTarget(PushUpTarget):
    """Speaks PushUp's API (inherited); serves with `workers` processes on one port."""

    name = "pushup-workers"

    def __init__(
        self, host: str = "127.0.0.1", workers: int = 6, extra_args: tuple[str, ...] = ()
    ) -> None:
        super().__init__(host, extra_args)
        self.workers = workers
        self.redis = RedisServer(host)
        self._probes: dict[int, http.client.HTTPConnection] = {}
        # Polls parked on each worker (by pid) at the last `subscribers` call.
        self.spread: dict[int, int] = {}

    @property
    def redis_pid(self) -> int | None:
        return self.redis.pid

    def start(self) -> None:
        try:
            self._start_engine()
            self._start_server()
            self._probe_workers()
        except BaseException:
            self.stop()
            raise

    def _start_engine(self) -> None:
        self.redis.start()

    def _stop_engine(self) -> None:
        self.redis.stop()

    def _engine_args(self) -> tuple[str, ...]:
        return ("--engine", self.redis.url, "--data-dir", "none")

    def _start_server(self) -> None:
        for attempt in range(5):
            self.port = free_port(self.host)
            args = [sys.executable, "-m", "pushup", "serve", "--host", self.host]
            self._proc = subprocess.Popen(
                [
                    *args,
                    *("--port", str(self.port), "--workers", str(self.workers)),
                    *self._engine_args(),
                    *("--keepalive-timeout", str(KEEPALIVE_S), "--log-level", "warning"),
                    *self._extra_args,
                ],
                stdin=subprocess.DEVNULL,
            )
            try:
                wait_until_serving(self.host, self.port, "/health", self._proc)
                return
            except RuntimeError:
                stop_process(self._proc)
                self._proc = None
                if attempt == 4:
                    raise

    def stop(self) -> None:
        for conn in self._probes.values():
            conn.close()
        self._probes = {}
        workers = self.worker_pids()
        # The supervisor gives its workers 10 s to close 100,000 connections: wait longer.
        stop_process(self._proc, timeout=30.0)
        self._proc = None
        # A supervisor that had to be killed leaves its workers (a process group of
        # their own) behind: end those still running, by the pids it started.
        for pid in workers:
            if _is_worker(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._stop_engine()

    def worker_pids(self) -> list[int]:
        """The supervisor's children that are workers: those serving now."""
        if self._proc is None:
            return []
        return sorted(pid for pid in _children(self._proc.pid) if _is_worker(pid))

    def _probe_workers(self, deadline_s: float = 30.0) -> None:
        """Hold a keep-alive connection to every worker (bounded by `deadline_s`)."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            workers = self.worker_pids()
            for pid in list(self._probes):
                if pid not in workers:
                    self._probes.pop(pid).close()
            if len(workers) == self.workers and set(workers) <= set(self._probes):
                return
            conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                conn.request("GET", "/health")
                conn.getresponse().read()
                assert conn.sock is not None
                client = conn.sock.getsockname()
                owner = _owner((self.host, self.port), (client[0], client[1]), workers)
            except (OSError, http.client.HTTPException):
                owner = None
            if owner is None or owner in self._probes:
                conn.close()
            else:
                self._probes[owner] = conn
        raise RuntimeError(
            f"found {len(self._probes)} of {self.workers} workers within {deadline_s:g} s"
        )

    def worker_subscribers(self, channel: str) -> dict[int, int]:
        """Polls parked on each worker, by worker pid."""
        counts: dict[int, int] = {}
        for _ in range(3):
            try:
                for pid, conn in sorted(self._probes.items()):
                    if pid not in counts:
                        counts[pid] = _channel_subscribers(conn, channel)
                return counts
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                # A probe lost (a restarted worker, say): remake the missing ones.
                for pid in [pid for pid in self._probes if pid not in counts]:
                    self._probes.pop(pid).close()
                self._probe_workers()
        raise RuntimeError("the workers' probes kept failing")

    def subscribers(self, channel: str) -> int:
        self.spread = self.worker_subscribers(channel)
        return sum(self.spread.values())


class NatsWorkersTarget(WorkersTarget):
    """`--workers N` without --engine, as `pushup serve` runs by default: the workers
    share their supervisor's private nats-server, whose JetStream store is in a fresh
    data directory (removed when the target stops). Its CPU counts as the server's."""

    name = "pushup-workers-nats"

    def __init__(
        self, host: str = "127.0.0.1", workers: int = 2, extra_args: tuple[str, ...] = ()
    ) -> None:
        super().__init__(host, workers, extra_args)
        self._data_dir: str | None = None

    def _start_engine(self) -> None:
        # Made here, not in __init__: load-generator processes build targets too.
        self._data_dir = tempfile.mkdtemp(prefix="pushup-bench-data-")

    def _stop_engine(self) -> None:
        if self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    def _engine_args(self) -> tuple[str, ...]:
        assert self._data_dir is not None
        return ("--data-dir", self._data_dir)


class NchanWorkersTarget(NchanTarget):
    """Nchan with `workers` nginx workers, long polls waiting `POLL_TIMEOUT_S`."""

    name = "nchan-workers"

    def __init__(self, host: str = "127.0.0.1", workers: int = 6) -> None:
        super().__init__(host, POLL_TIMEOUT_S, workers=workers, shared_memory_mib=NCHAN_SHARED_MIB)
        self.workers = workers


def local_subscribers(info: dict[str, object]) -> int:
    """The polls parked on the node or worker that answered GET /channels/{id}: its own
    count (`local_subscribers` where nodes share an engine and `subscribers` is their
    total, best effort)."""
    return int(str(info.get("local_subscribers", info["subscribers"])))


def _channel_subscribers(conn: http.client.HTTPConnection, channel: str) -> int:
    conn.request("GET", f"/channels/{channel}")
    response = conn.getresponse()
    body = response.read()
    if response.status == 404:
        return 0
    if response.status != 200:
        raise ValueError(f"channel info failed: {response.status} {body[:200]!r}")
    return local_subscribers(json.loads(body))


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(child) for child in f.read().split())
    return kids


def _is_worker(pid: int) -> bool:
    """Still running as a PushUp worker (not a reused pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"pushup.worker" in f.read()
    except OSError:
        return False


def _hex_address(host: str, port: int) -> str:
    """An IPv4 address as /proc/net/tcp writes it (little-endian hex, then the port)."""
    octets = [int(part) for part in host.split(".")]
    return "".join(f"{octet:02X}" for octet in reversed(octets)) + f":{port:04X}"


def _owner(server: tuple[str, int], client: tuple[str, int], pids: list[int]) -> int | None:
    """The worker holding the server side of the connection from `client` to `server`."""
    local, remote = _hex_address(*server), _hex_address(*client)
    inode = None
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                inode = fields[9]
                break
    if inode is None:
        return None
    wanted = f"socket:[{inode}]"
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == wanted:
                        return pid
    return None

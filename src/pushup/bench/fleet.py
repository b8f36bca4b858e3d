"""Subscribers and publishers spread over several client processes.

One process holds at most ~19,500 sockets (the open-files limit), one source address
~28,000 ports towards one server, and one Python process one core. A `Fleet` splits its
subscribers (or keep-alive publishers) over worker processes, each with its own source
address (127.0.0.2, ...), and drives them with small commands over pipes.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from pushup.bench.loadgen import (
    PollClient,
    PublishSession,
    Recorder,
    open_pollers,
    open_publish_sessions,
)
from pushup.bench.targets import Target, make_target

# A worker holds at most this many connections: the open-files limit is 20,000.
MAX_PER_PROCESS = 19_000


@dataclass
class FleetStats:
    """Everything the fleet's processes saw, merged."""

    trips_s: list[float] = field(default_factory=list)
    received: Counter[int] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    bytes_in: int = 0
    bytes_out: int = 0
    polls: int = 0
    errors: int = 0

    def add(self, summary: dict[str, Any]) -> None:
        self.trips_s.extend(summary["trips_s"])
        self.received.update(summary["received"])
        self.statuses.update(summary["statuses"])
        self.bytes_in += summary["bytes_in"]
        self.bytes_out += summary["bytes_out"]
        self.polls += summary["polls"]
        self.errors += summary["errors"]


@dataclass
class PublishResult:
    """One publish run over the whole fleet; times are `time.monotonic()` (system-wide)."""

    requested: int = 0
    acknowledged: int = 0  # 2xx answers
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0  # connections lost or refused, unparsable answers
    bytes_in: int = 0
    bytes_out: int = 0
    started: float = 0.0  # earliest first request of any process
    finished: float = 0.0  # latest last answer of any process
    timed_out: bool = False

    @property
    def seconds(self) -> float:
        return max(self.finished - self.started, 1e-9)

    @property
    def per_second(self) -> float:
        """Acknowledged publications per second of the whole run."""
        return self.acknowledged / self.seconds

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)


class Fleet:
    """`processes` client processes, each polling one target through its own address."""

    def __init__(self, target_name: str, host: str, port: int, processes: int = 1) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self._publishers: list[int] = []  # open publisher connections per process
        for index in range(processes):
            parent, child = context.Pipe()
            source = f"127.0.0.{index + 2}"
            proc = context.Process(
                target=_worker_main,
                args=(child, target_name, host, port, source),
                daemon=True,
            )
            proc.start()
            child.close()
            self._pipes.append(parent)
            self._procs.append(proc)

    @property
    def processes(self) -> int:
        return len(self._procs)

    def _ask(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Send one command to each worker, then gather every reply."""
        for pipe, command in zip(self._pipes, commands, strict=True):
            pipe.send(command)
        replies = []
        for pipe in self._pipes:
            if not pipe.poll(600):
                raise TimeoutError("a client process did not answer within 600 s")
            reply = pipe.recv()
            if isinstance(reply, BaseException):
                raise reply
            replies.append(reply)
        return replies

    def open(
        self,
        channels: Sequence[str],
        count: int,
        *,
        timeout_s: float,
        interval_s: float = 0.0,
    ) -> int:
        """Open `count` subscribers over `channels`, split evenly; how many failed."""
        shares = [
            count // self.processes + (i < count % self.processes) for i in range(self.processes)
        ]
        if max(shares) > MAX_PER_PROCESS:
            raise ValueError(
                f"{count} subscribers need more than {self.processes} client processes"
            )
        offsets = [sum(shares[:i]) for i in range(self.processes)]
        commands = []
        for share, offset in zip(shares, offsets, strict=True):
            # Rotate so subscriber i of the whole fleet gets channel i % len(channels).
            rotated = [channels[(offset + j) % len(channels)] for j in range(len(channels))]
            commands.append(("open", rotated, share, timeout_s, interval_s))
        return sum(self._ask(*commands))

    def parked(self) -> int:
        """Subscribers with a poll out and unanswered, as the clients see it."""
        return sum(self._ask(*[("parked",)] * self.processes))

    def stats(self, reset: bool = False) -> FleetStats:
        merged = FleetStats()
        for summary in self._ask(*[("stats", reset)] * self.processes):
            merged.add(summary)
        return merged

    def pids(self) -> list[int]:
        """The client processes, for reading their CPU use."""
        return [proc.pid for proc in self._procs if proc.pid is not None]

    def open_publishers(self, connections: int) -> int:
        """Open `connections` idle keep-alive publisher connections, split evenly over the
        processes (kept for every later `publish`); how many failed."""
        shares = [
            connections // self.processes + (i < connections % self.processes)
            for i in range(self.processes)
        ]
        failed = self._ask(*[("pubopen", share) for share in shares])
        self._publishers = [share - bad for share, bad in zip(shares, failed, strict=True)]
        return sum(failed)

    def prepare_publications(
        self, channels: Sequence[str], count: int, *, first_seq: int, pad: int = 0
    ) -> None:
        """Have the processes build the next run's requests now, so building them is not
        measured: publication i (0..count-1) goes to `channels[i % len(channels)]` and
        carries sequence number `first_seq + i`; each process gets a share in proportion
        to its open publisher connections."""
        publishers = self._publishers
        if sum(publishers) == 0:
            raise RuntimeError("no publisher connection is open: call open_publishers first")
        total = sum(publishers)
        bounds = [count * sum(publishers[:i]) // total for i in range(self.processes + 1)]
        self._ask(
            *[
                ("pubprepare", list(channels), bounds[i], bounds[i + 1] - bounds[i], first_seq, pad)
                for i in range(self.processes)
            ]
        )

    def publish(self, depth: int = 1, deadline_s: float = 120.0) -> PublishResult:
        """Send the prepared publications, `depth` in flight per connection, every process
        at once; bounded by `deadline_s` (then `timed_out` is set)."""
        merged = PublishResult(started=float("inf"), finished=0.0)
        for reply in self._ask(*[("publish", depth, deadline_s)] * self.processes):
            merged.requested += reply["requested"]
            merged.acknowledged += reply["acknowledged"]
            merged.statuses.update(reply["statuses"])
            merged.errors += reply["errors"]
            merged.bytes_in += reply["bytes_in"]
            merged.bytes_out += reply["bytes_out"]
            merged.timed_out |= reply["timed_out"]
            if reply["requested"]:
                merged.started = min(merged.started, reply["started"])
                merged.finished = max(merged.finished, reply["finished"])
        if merged.started == float("inf"):
            merged.started = merged.finished
        return merged

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ask(*[("close",)] * self.processes)
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for pipe in self._pipes:
            pipe.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _worker_main(pipe: Connection, target_name: str, host: str, port: int, source: str) -> None:
    try:
        import uvloop

        uvloop.run(_worker(pipe, target_name, host, port, source))
    except ImportError:
        asyncio.run(_worker(pipe, target_name, host, port, source))


async def _worker(pipe: Connection, target_name: str, host: str, port: int, source: str) -> None:
    # Only the target's request/response codec is used here; its server runs elsewhere.
    target = make_target(target_name)
    target.host, target.port = host, port
    recorder = Recorder()
    clients: list[PollClient] = []
    publishers = Publishers(target, source)
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        name = command[0]
        try:
            if name == "open":
                _, channels, count, timeout_s, interval_s = command
                errors_before = recorder.errors
                clients += await open_pollers(
                    target,
                    channels,
                    count,
                    recorder,
                    timeout_s=timeout_s,
                    interval_s=interval_s,
                    source_addresses=(source,),
                )
                reply: Any = recorder.errors - errors_before
            elif name == "parked":
                reply = sum(1 for client in clients if client.parked)
            elif name == "stats":
                reply = recorder.summary()
                if command[1]:
                    recorder.reset()
            elif name == "pubopen":
                reply = await publishers.open(command[1])
            elif name == "pubprepare":
                publishers.prepare(*command[1:])
                reply = None
            elif name == "publish":
                reply = await publishers.publish(*command[1:])
            elif name == "close":
                for client in clients:
                    client.stop()
                publishers.close()
                pipe.send(None)
                return
            else:
                reply = ValueError(f"unknown command {name!r}")
        except Exception as exc:
            reply = exc
        pipe.send(reply)


class Publishers:
    """Keep-alive publisher connections and their share of the next run (a client
    process's, or a scenario's own for a small run in its process)."""

    def __init__(self, target: Target, source: str) -> None:
        self.target = target
        self.source = source
        self.recorder = Recorder()
        self.sessions: list[PublishSession] = []
        self.requests: list[bytes] = []

    async def open(self, count: int) -> int:
        errors_before = self.recorder.errors
        self.sessions += await open_publish_sessions(
            self.target, count, self.recorder, source_address=self.source
        )
        return self.recorder.errors - errors_before

    def prepare(
        self, channels: list[str], first_index: int, count: int, first_seq: int, pad: int
    ) -> None:
        padding = b',"pad":"' + b"x" * pad + b'"' if pad else b""
        self.requests = [
            self.target.publish_request(
                channels[i % len(channels)], b'{"seq":%d%s}' % (first_seq + i, padding)
            )
            for i in range(first_index, first_index + count)
        ]

    async def publish(self, depth: int, deadline_s: float) -> dict[str, Any]:
        self.recorder.reset()
        live = [s for s in self.sessions if s.transport is not None]
        requests = iter(self.requests)
        requested = len(self.requests)
        self.requests = []
        acknowledged_before = sum(s.acknowledged for s in live)
        timed_out = False
        started = time.monotonic()
        if requested and not live:
            self.recorder.errors += 1
        elif requested:
            done = [s.send(lambda: next(requests, None), depth) for s in live]
            try:
                results = await asyncio.wait_for(
                    asyncio.gather(*done, return_exceptions=True), deadline_s
                )
                self.recorder.errors += sum(isinstance(r, BaseException) for r in results)
            except TimeoutError:
                timed_out = True
                for session in live:  # answers still due would land in the next run
                    if session.in_flight:
                        session.close()
        finished = time.monotonic()
        return {
            "requested": requested,
            "acknowledged": sum(s.acknowledged for s in live) - acknowledged_before,
            "statuses": dict(self.recorder.statuses),
            "errors": self.recorder.errors,
            "bytes_in": self.recorder.bytes_in,
            "bytes_out": self.recorder.bytes_out,
            "started": started,
            "finished": finished,
            "timed_out": timed_out,
        }

    def close(self) -> None:
        for session in self.sessions:
            session.close()

"""Subscribers spread over several client processes.

One process holds at most ~19,500 sockets (the open-files limit), one source address
~28,000 ports towards one server, and one Python process one core. A `Fleet` splits its
subscribers over worker processes, each with its own source address (127.0.0.2, ...),
and drives them with small commands over pipes.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from pushup.bench.loadgen import PollClient, Recorder, open_pollers
from pushup.bench.targets import make_target

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


class Fleet:
    """`processes` client processes, each polling one target through its own address."""

    def __init__(self, target_name: str, host: str, port: int, processes: int = 1) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
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
        start: bool = True,
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
            commands.append(("open", rotated, share, timeout_s, interval_s, start))
        return sum(self._ask(*commands))

    def poll_all(self) -> None:
        """Send a poll on every idle subscriber (those opened with start=False)."""
        self._ask(*[("poll",)] * self.processes)

    def parked(self) -> int:
        """Subscribers with a poll out and unanswered, as the clients see it."""
        return sum(self._ask(*[("parked",)] * self.processes))

    def stats(self, reset: bool = False) -> FleetStats:
        merged = FleetStats()
        for summary in self._ask(*[("stats", reset)] * self.processes):
            merged.add(summary)
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
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        name = command[0]
        try:
            if name == "open":
                _, channels, count, timeout_s, interval_s, start = command
                errors_before = recorder.errors
                clients += await open_pollers(
                    target,
                    channels,
                    count,
                    recorder,
                    timeout_s=timeout_s,
                    interval_s=interval_s,
                    source_addresses=(source,),
                    start=start,
                )
                reply: Any = recorder.errors - errors_before
            elif name == "poll":
                for client in clients:
                    if not client.parked:
                        client.poll()
                reply = None
            elif name == "parked":
                reply = sum(1 for client in clients if client.parked)
            elif name == "stats":
                reply = recorder.summary()
                if command[1]:
                    recorder.reset()
            elif name == "close":
                for client in clients:
                    client.stop()
                pipe.send(None)
                return
            else:
                reply = ValueError(f"unknown command {name!r}")
        except Exception as exc:
            reply = exc
        pipe.send(reply)

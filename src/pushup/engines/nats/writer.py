"""Appending to the log: one JetStream publication per change, on top of the last entry
this node has applied (`Nats-Expected-Last-Sequence`), so a change is always decided on
a current copy. Another node's entry in between fails the append; the node catches up
and decides again. The stream is the one place where changes are ordered, as a Lua
script's atomicity is for the Redis engine.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import APIError

from pushup.core.errors import EngineUnavailable
from pushup.engines.nats import records
from pushup.engines.nats.log import Log
from pushup.engines.nats.records import Entry

log = logging.getLogger("pushup.nats")

# Errors meaning "NATS is out of reach now": answered with 503.
UNREACHABLE = (nats.errors.Error, asyncio.TimeoutError, OSError)
_WRONG_LAST_SEQUENCE = 10071
_LAST_SEQUENCE = re.compile(r"(\d+)\s*$")
# Appends lost to other nodes' before giving up (each loss is another node's progress).
_MAX_TRIES = 100


@dataclass(frozen=True, slots=True)
class Append:
    """An entry to write: its subject, and its per-message TTL in seconds (None: kept)."""

    subject: str
    entry: Entry
    ttl_s: int | None = None


class Writer:
    """Appends one entry at a time from this node, on top of the applied log."""

    __slots__ = ("_js", "_lock", "_log", "_nc", "_stream", "_timeout_s")

    def __init__(
        self, nc: Client, js: JetStreamContext, stream: str, log: Log, timeout_s: float
    ) -> None:
        self._nc = nc
        self._js = js
        self._stream = stream
        self._log = log
        self._timeout_s = timeout_s
        self._lock = asyncio.Lock()

    async def append(self, decide: Callable[[], Append | None]) -> Entry | None:
        """Decide on the current copy (`decide` may raise, or give None: nothing to
        write), append, and apply; the entry written, or None. Raises EngineUnavailable
        while NATS is out of reach, and when the write, its wait in line behind this
        node's others included, takes longer than the timeout: appends go one at a
        time, so without that bound each caller would wait out every timeout before
        its own."""
        await need_task()
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._append(decide)
        except TimeoutError as exc:
            raise EngineUnavailable("NATS did not take the write in time") from exc

    async def _append(self, decide: Callable[[], Append | None]) -> Entry | None:
        async with self._lock:
            for _ in range(_MAX_TRIES):
                change = decide()
                if change is None:
                    return None
                if not self._nc.is_connected:
                    # nats-py would hold the write until it reconnects, and store it
                    # long after this caller was told 503.
                    raise EngineUnavailable("the connection to NATS is down; reconnecting")
                expected = self._log.applied
                try:
                    ack = await self._js.publish(
                        change.subject,
                        records.encode(change.entry),
                        timeout=self._timeout_s,
                        headers={"Nats-Expected-Last-Sequence": str(expected)},
                        msg_ttl=change.ttl_s,
                    )
                except APIError as exc:
                    if exc.err_code != _WRONG_LAST_SEQUENCE:
                        raise EngineUnavailable(f"NATS refused a write: {exc}") from exc
                    await self._catch_up(exc)
                    continue
                except UNREACHABLE as exc:
                    raise EngineUnavailable(f"NATS is unreachable: {exc!r}") from exc
                # Applied here unless the log got there first: the caller's listener
                # knows of the change when the caller goes on.
                self._log.apply(ack.seq, change.entry)
                return change.entry
            raise EngineUnavailable("too many concurrent writes to the NATS stream")

    async def _catch_up(self, exc: APIError) -> None:
        """Another entry came first: wait until this node has applied it, or adopt its
        sequence if whatever lies between is gone."""
        match = _LAST_SEQUENCE.search(exc.description or "")
        if match is None:
            raise EngineUnavailable(f"NATS refused a write: {exc}") from exc
        last = int(match.group(1))
        if await self._log.wait(last, min(0.5, self._timeout_s)):
            return
        try:
            first = await self._log.first_after(self._log.applied)
        except UNREACHABLE as error:
            raise EngineUnavailable(f"NATS is unreachable: {error!r}") from error
        if first is None or first > last:
            self._log.adopt(last)
            return
        if not await self._log.wait(last, self._timeout_s):
            raise EngineUnavailable(f"this node fell behind the NATS stream (at {first})")


async def need_task() -> None:
    """Make sure a Task runs the caller before it goes into nats-py, whose timeouts
    need one: the HTTP server steps handlers by hand until their first real wait
    (`pushup.http.eager`), and a bare yield is its signal to hand them to a Task."""
    if asyncio.current_task() is None:
        await asyncio.sleep(0)

"""Closes connections that sit idle too long, with one timer for all of them."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol


class Closable(Protocol):
    def close_idle(self) -> None: ...


class IdleConnections:
    """Connections ordered by last activity: the oldest are always at the front.

    `touch` moves a connection to the back in O(1); a sweep every second closes those
    idle longer than the timeout. A connection busy with a request is not taken out
    when it starts one (that would cost every request): the sweep drops it when it
    reaches it, `close_idle` leaves it open, and its answer touches it again.
    """

    def __init__(self, timeout_s: float, clock: Callable[[], float]) -> None:
        self.timeout_s = timeout_s
        self._clock = clock
        self._since: OrderedDict[Closable, float] = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None
        # Other once-a-second checks riding on this timer (request timeouts).
        self._also: list[Callable[[], None]] = []

    def also_sweep(self, check: Callable[[], None]) -> None:
        """Run `check` on every sweep too: one timer for every such deadline."""
        self._also.append(check)

    def touch(self, conn: Closable) -> None:
        self._since[conn] = self._clock()
        self._since.move_to_end(conn)

    def forget(self, conn: Closable) -> None:
        self._since.pop(conn, None)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = loop.call_later(1.0, self._sweep, loop)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        horizon = self._clock() - self.timeout_s
        since = self._since
        while since:
            conn, last = next(iter(since.items()))
            if last > horizon:
                break
            del since[conn]
            conn.close_idle()
        for check in self._also:
            check()
        self._timer = loop.call_later(1.0, self._sweep, loop)

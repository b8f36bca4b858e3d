"""Identical calls in flight share one round trip to Redis.

After a fan-out every woken subscriber re-polls at once with the same cursor:
thousands of identical reads (and resolves). One round trip answers them all, instead
of thousands queueing for the connection pool, and the publication queueing behind
them.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

Key = tuple[Any, ...]


class SharedCalls:
    """The calls in flight, by what they ask."""

    __slots__ = ("_in_flight",)

    def __init__(self) -> None:
        self._in_flight: dict[Key, asyncio.Future[Any]] = {}

    def join(self, key: Key, call: Callable[[], Coroutine[Any, Any, Any]]) -> asyncio.Future[Any]:
        """The call in flight under `key`, or a new one; shielded, so one caller
        leaving (its client went away) never cancels the others' call."""
        shared = self._in_flight.get(key)
        if shared is None:
            shared = asyncio.ensure_future(call())
            self._in_flight[key] = shared
            shared.add_done_callback(functools.partial(self._landed, key))
        return asyncio.shield(shared)

    def forget(self) -> None:
        """Calls from now on start afresh (the ones in flight began before a resync)."""
        self._in_flight.clear()

    def _landed(self, key: Key, done: asyncio.Future[Any]) -> None:
        if self._in_flight.get(key) is done:
            del self._in_flight[key]
        if not done.cancelled():
            done.exception()  # retrieved, even if every caller left

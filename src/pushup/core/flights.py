"""Idempotent publications in flight in this process: a retry with the key of one waits
for it and takes its answer, rather than asking the engine a second time."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pushup.core.engine import Engine, Publication
from pushup.core.errors import IdempotencyKeyReused
from pushup.core.idempotency import IdempotencyKey
from pushup.core.model import Message
from pushup.observe import metrics

# How a call in flight ended: its fingerprint and messages, or None if it stored nothing.
Landed = tuple[str, list[Message]] | None


class Flights:
    """The keys (scope, key) of publications in flight, each with the futures of the
    retries waiting for it (one each: a retry whose caller leaves cancels only its own)."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, str], list[asyncio.Future[Landed]]] = {}

    async def publish(
        self, engine: Engine, publications: Sequence[Publication], key: IdempotencyKey
    ) -> tuple[list[Message], bool]:
        """`engine.publish_once`, unless a call with this key is in flight here: then
        its answer once it lands (or a call of this one's own, if it stored nothing).
        Counts the messages published, or the answer replayed."""
        slot = (key.scope, key.key)
        while (waiting := self._waiting.get(slot)) is not None:
            waiter: asyncio.Future[Landed] = asyncio.get_running_loop().create_future()
            waiting.append(waiter)
            first = await waiter
            if first is not None:
                if first[0] != key.fingerprint:
                    raise IdempotencyKeyReused(key.key)
                metrics.replayed()
                return first[1], True
        waiting = self._waiting[slot] = []
        landed: Landed = None
        try:
            messages, replayed = await engine.publish_once(publications, key)
            landed = (key.fingerprint, messages)
        finally:
            del self._waiting[slot]
            for waiter in waiting:
                if not waiter.done():  # cancelled: its caller has gone
                    waiter.set_result(landed)
        if replayed:
            metrics.replayed()
        else:
            metrics.published(len(messages))
        return messages, replayed

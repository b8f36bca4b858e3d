"""Graceful shutdown: stop accepting, hand every subscriber its cursor, let requests in
flight finish, all within a bound.

A parked poll cut off without an answer would make its client wait for an error and
back off; answered at once with no messages and a cursor that misses nothing (what a
timeout answers), the client re-polls at once, on another node or on this one
restarted, and loses nothing. Streams end as they would on a lost connection (a
WebSocket with 1001), and their clients resume from their last id. A request being
received or handled (a publication waiting for the journal or Redis) is answered
first, with `Connection: close`, so a publisher always learns whether its message was
stored. Whatever is still open when the time is up is cut.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pushup.core.hub import Hub
from pushup.core.waiters import Subscription

if TYPE_CHECKING:
    from pushup.http.server import HttpServer

log = logging.getLogger("pushup.http")


def dismiss_polls(hub: Hub, subs: Iterable[Subscription]) -> None:
    """Answer parked polls now, empty, each with the cursor a timeout would give it:
    past everything this hub was told of and everything its read covered, so a re-poll
    with it misses nothing and repeats nothing. Streams are left to their connection."""
    polls = [sub for sub in subs if sub.parked and not sub.stream]
    if polls:
        hub.dismiss(polls)


async def stop_gracefully(server: HttpServer, timeout_s: float) -> None:
    """Stop `server` gracefully, in at most about `timeout_s` seconds."""
    server.stop_accepting()
    dismiss_polls(server.hub, server.hub.waiters.all())
    for conn in list(server.connections):
        conn.close_gracefully()
    busy = len(server.connections)
    if busy:
        log.debug("stopping: waiting up to %g s for %d connections", timeout_s, busy)
        try:
            async with asyncio.timeout(timeout_s):
                await server.all_closed.wait()
        except TimeoutError:
            log.warning(
                "stopping: %d connections still open after %g s: closing them",
                len(server.connections),
                timeout_s,
            )
            for conn in list(server.connections):
                conn.abort()
    await server.close()

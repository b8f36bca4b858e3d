"""A node's start on the stream: connect, make the stream (or bring an older one to this
layout), replay the control log, learn where the stream stands, raise the id floor. A
stream just made, or a cluster just started and electing its leaders, may answer no one
for a while, so each step is tried again until a deadline, and only then is the start
given up."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from pushup.core.errors import EngineUnavailable
from pushup.engines.nats import layout
from pushup.engines.nats.layout import Servers, Subjects
from pushup.engines.nats.log import Log
from pushup.engines.nats.records import Floor
from pushup.engines.nats.replica import Replica
from pushup.engines.nats.writer import UNREACHABLE, Change, Writer, control

log = logging.getLogger("pushup.nats")


async def connect(
    servers: Servers,
    timeout_s: float,
    *,
    on_error: Callable[[Exception], Awaitable[None]],
    on_disconnected: Callable[[], Awaitable[None]],
    on_reconnected: Callable[[], Awaitable[None]],
) -> Client:
    """The node's connection, which reconnects forever once made; the first attempt is
    bounded by `timeout_s` (nats-py would try it again and again)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await nats.connect(
                servers=list(servers.urls),
                connect_timeout=min(timeout_s, 2.0),
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                allow_reconnect=True,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
            )
    except (*UNREACHABLE, nats.errors.NoServersError) as exc:
        raise EngineUnavailable(f"cannot reach NATS: {exc!r}") from exc


async def ensure_stream(
    js: JetStreamContext, servers: Servers, subjects: Subjects, deadline: float
) -> None:
    """Make the stream unless it exists (or bring an older one to this layout); a
    cluster still electing its JetStream leader is given until `deadline`."""
    config = layout.stream_config(servers, subjects)
    while True:
        try:
            try:
                info = await js.stream_info(servers.stream)
            except NotFoundError:
                try:
                    await js.add_stream(config)
                except BadRequestError:  # another node made it meanwhile
                    info = await js.stream_info(servers.stream)
                else:
                    return
            if info.config.republish is None or not info.config.allow_atomic:
                await js.update_stream(config)
            return
        except (*UNREACHABLE, ServiceUnavailableError) as exc:
            if isinstance(exc, NotFoundError | BadRequestError):
                raise
            await wait_or_raise(exc, deadline)


async def open_log(
    nc: Client,
    js: JetStreamContext,
    servers: Servers,
    subjects: Subjects,
    replica: Replica,
    timeout_s: float,
    deadline: float,
) -> tuple[Log, Writer]:
    """The control log, replayed into `replica`, and a writer that knows where the
    stream stands, as the replica's ids then do (the replica is filled only once a
    replay is whole)."""
    while True:
        opened = Log(nc, js, servers.stream, subjects, replica)
        try:
            await opened.open(timeout_s)
            writer = Writer(nc, servers.stream, subjects, opened, timeout_s)
            await writer.start()
            break
        except UNREACHABLE as exc:
            await opened.close()
            await wait_or_raise(exc, deadline)
    last_id = writer.seqs[1]
    replica.message_ids.advance_to(last_id)
    replica.told = max(replica.told, last_id)
    return opened, writer


async def raise_floor(
    writer: Writer,
    replica: Replica,
    subjects: Subjects,
    clock: Callable[[], float],
    deadline: float,
) -> None:
    """Ids issued by any node from now on are above this node's clock: a floor entry,
    written again until it is in (twice is harmless) or `deadline` has passed."""

    def decide(last_id: int) -> Change:
        now_us = int(clock() * 1_000_000)
        floor = Floor(
            max(now_us, last_id, replica.message_ids.last), max(now_us, replica.channel_ids.last)
        )
        return control(subjects.floor, floor, last_id)

    while True:
        try:
            await writer.append(decide)
            return
        except EngineUnavailable as exc:
            await wait_or_raise(exc, deadline)


async def wait_or_raise(exc: Exception, deadline: float) -> None:
    """Wait a little before trying again, unless `deadline` has passed."""
    if time.monotonic() > deadline:
        raise exc
    log.info("waiting for NATS JetStream: %r", exc)
    await asyncio.sleep(0.5)

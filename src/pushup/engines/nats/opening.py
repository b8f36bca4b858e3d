"""A node's start on the stream: make the stream (or bring an older one to this
layout), replay the control log, learn where the stream stands. A stream just made, or
a cluster just started and electing its leaders, may answer no one for a while, so each
step is tried again until a deadline, and only then is the start given up."""

from __future__ import annotations

import asyncio
import logging
import time

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from pushup.engines.nats import layout
from pushup.engines.nats.layout import Servers, Subjects
from pushup.engines.nats.log import Log
from pushup.engines.nats.replica import Replica
from pushup.engines.nats.writer import UNREACHABLE, Writer

log = logging.getLogger("pushup.nats")


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
    stream stands (the replica is filled only once a replay is whole)."""
    while True:
        opened = Log(nc, js, servers.stream, subjects, replica)
        try:
            await opened.open(timeout_s)
            writer = Writer(nc, servers.stream, subjects, opened, timeout_s)
            await writer.start()
            return opened, writer
        except UNREACHABLE as exc:
            await opened.close()
            await wait_or_raise(exc, deadline)


async def wait_or_raise(exc: Exception, deadline: float) -> None:
    """Wait a little before trying again, unless `deadline` has passed."""
    if time.monotonic() > deadline:
        raise exc
    log.info("waiting for NATS JetStream: %r", exc)
    await asyncio.sleep(0.5)

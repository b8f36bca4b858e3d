"""What redis-py needs of asyncio tasks: a Task to run in, and firm cancellation."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("pushup.redis")


async def need_task() -> None:
    """Make sure a Task runs the caller before it goes into redis-py.

    The HTTP server runs most handlers without a Task (`pushup.http.eager` steps the
    coroutine by hand: a Task per request costs more than the handler itself). redis-py's
    timeouts, like `asyncio.timeout`, need `asyncio.current_task()` and fail without one.
    A bare yield is the stepper's signal to hand the coroutine to a Task, which runs it
    from then on; inside a Task already, this costs nothing.

    Every call of a Lua script goes through here (`Scripts`), and so does a subscriber
    count, which also waits with `asyncio.timeout`. Anything new in this engine that
    reaches redis-py or `asyncio.timeout` from a request must call it first.
    """
    if asyncio.current_task() is None:
        await asyncio.sleep(0)


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel a background task and wait for its end. The cancellation is repeated:
    redis-py can swallow one that lands while a command completes (asyncio.wait_for
    on Python 3.11)."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.1)
    if not task.cancelled() and task.exception() is not None:
        log.error("a Redis engine task failed", exc_info=task.exception())

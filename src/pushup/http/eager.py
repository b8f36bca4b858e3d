"""Run a handler coroutine without a Task when it never has to wait.

Most requests (a publish to the embedded engine, a poll that parks) finish without
suspending; creating a Task for each would cost more than the handler itself. This
steps the coroutine by hand and hands it to a Task only at its first real wait,
as Python 3.12's eager tasks do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def start_eagerly(
    coro: Coroutine[Any, Any, T],
    on_result: Callable[[T], None],
    on_error: Callable[[BaseException], None],
) -> asyncio.Task[None] | None:
    """Run `coro` now; the Task finishing it if it suspended, else None."""
    try:
        awaited = coro.send(None)
    except StopIteration as stop:
        on_result(stop.value)
        return None
    except Exception as exc:
        on_error(exc)
        return None
    task = asyncio.ensure_future(_finish(coro, awaited, on_result, on_error))

    def release_if_cancelled(task: asyncio.Task[None]) -> None:
        # A task cancelled before its first step never enters `_finish`'s body.
        if task.cancelled():
            if awaited is not None:
                awaited.cancel()
            coro.close()

    task.add_done_callback(release_if_cancelled)
    return task


async def _finish(
    coro: Coroutine[Any, Any, T],
    awaited: Any,
    on_result: Callable[[T], None],
    on_error: Callable[[BaseException], None],
) -> None:
    try:
        while True:
            if awaited is None:  # a bare `yield`, as in asyncio.sleep(0)
                await asyncio.sleep(0)
            else:
                awaited._asyncio_future_blocking = False
                # Wait without taking the result: the coroutine reads it when resumed.
                await asyncio.wait((awaited,))
            try:
                awaited = coro.send(None)
            except StopIteration as stop:
                on_result(stop.value)
                return
            except Exception as exc:
                on_error(exc)
                return
    except asyncio.CancelledError:
        # Cancelled while waiting, possibly before the first step: release the handler.
        if awaited is not None:
            awaited.cancel()
        coro.close()
        raise

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
    return asyncio.ensure_future(_finish(coro, awaited, on_result, on_error))


async def _finish(
    coro: Coroutine[Any, Any, T],
    awaited: Any,
    on_result: Callable[[T], None],
    on_error: Callable[[BaseException], None],
) -> None:
    while True:
        try:
            if awaited is None:  # a bare `yield`, as in asyncio.sleep(0)
                await asyncio.sleep(0)
            else:
                awaited._asyncio_future_blocking = False
                # Wait without taking the result: the coroutine reads it when resumed.
                await asyncio.wait((awaited,))
        except asyncio.CancelledError:
            if awaited is not None:
                awaited.cancel()
            coro.close()
            raise
        try:
            awaited = coro.send(None)
        except StopIteration as stop:
            on_result(stop.value)
            return
        except Exception as exc:
            on_error(exc)
            return

"""Run a handler coroutine without a Task.

Most requests (a publish without a journal, a poll that parks) finish without
suspending; creating a Task for each would cost more than the handler itself. This
steps the coroutine by hand. When it waits on a future (a publication waiting for the
journal's group commit), the future's done callback steps it on: no Task either, which
saved 11-21 µs of server CPU per journaled publication (docs/benchmarks.md).

A handler that needs a Task (`asyncio.current_task()`, which `asyncio.timeout` and
redis-py's timeouts use) asks for one with a bare yield, `await asyncio.sleep(0)`: from
then on a Task runs it. Either way the handler keeps the context it started in: the
connection sets the request being handled in a context variable
(`observe.requests.current_request`) around the first step, and the done callbacks
that step it on, like the Task that takes it over, copy that context when made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


class Running(Protocol):
    """A handler still running; `cancel()` stops it (its client has gone)."""

    def cancel(self, msg: Any | None = None) -> bool: ...


def start_eagerly(
    coro: Coroutine[Any, Any, T],
    on_result: Callable[[T], None],
    on_error: Callable[[BaseException], None],
) -> Running | None:
    """Run `coro` now; what is still running it if it suspended, else None.

    Exactly one of `on_result` and `on_error` is called once the coroutine ends,
    unless it is cancelled first: then neither, the coroutine is closed (its `finally`
    blocks run) and the future it waited on is cancelled."""
    try:
        awaited = coro.send(None)
    except StopIteration as stop:
        on_result(stop.value)
        return None
    except Exception as exc:
        on_error(exc)
        return None
    if awaited is None:
        return _to_task(coro, on_result, on_error)
    stepper = _Stepper(coro, on_result, on_error)
    stepper.wait(awaited)
    return stepper


class _Stepper(Generic[T]):
    """Steps a coroutine on from the done callback of each future it awaits.

    It is itself that callback: one object per waiting request, nothing per step."""

    __slots__ = ("_awaited", "_coro", "_done", "_on_error", "_on_result", "_task")

    def __init__(
        self,
        coro: Coroutine[Any, Any, T],
        on_result: Callable[[T], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._coro = coro
        self._on_result = on_result
        self._on_error = on_error
        self._awaited: Any = None
        self._task: asyncio.Task[T] | None = None
        self._done = False  # ended, or cancelled

    def wait(self, awaited: Any) -> None:
        """Resume when `awaited` (what the coroutine yielded) is done."""
        if self._done:
            # Cancelled while it ran (between two waits): stop at this wait.
            if awaited is not None:
                awaited.cancel()
            self._coro.close()
            return
        if awaited is None:  # a bare yield: the handler asks for a Task
            self._task = _to_task(self._coro, self._on_result, self._on_error)
            return
        # What a Task does with a future the coroutine yields: the coroutine reads its
        # result (or exception) itself when resumed.
        awaited._asyncio_future_blocking = False
        self._awaited = awaited
        awaited.add_done_callback(self)

    def __call__(self, future: Any) -> None:
        """The awaited future is done: step the coroutine to its next wait or its end."""
        if future is not self._awaited:
            # Cancelled after the future finished but before this callback, which the
            # loop had already scheduled (removing it was too late): the coroutine is
            # closed, nothing to step.
            return
        self._awaited = None
        try:
            awaited = self._coro.send(None)
        except StopIteration as stop:
            self._done = True
            self._on_result(stop.value)
            return
        except (Exception, asyncio.CancelledError) as exc:
            # CancelledError too: the future was cancelled by another hand than ours,
            # and an exception escaping a callback would leave the request unanswered.
            self._done = True
            self._on_error(exc)
            return
        self.wait(awaited)

    def cancel(self, msg: Any | None = None) -> bool:
        if self._task is not None:
            return self._task.cancel(msg)
        if self._done:
            return False
        self._done = True
        awaited, self._awaited = self._awaited, None
        if awaited is not None:
            awaited.remove_done_callback(self)
            awaited.cancel()
            self._coro.close()
        # Else it is running now (or has ended): `wait` stops it at its next wait.
        return True


def _to_task(
    coro: Coroutine[Any, Any, T],
    on_result: Callable[[T], None],
    on_error: Callable[[BaseException], None],
) -> asyncio.Task[T]:
    """Hand the rest of the coroutine, stopped at a bare yield, to a Task of its own:
    a Task resumes a started coroutine as well as a new one, and then delivers
    cancellations into it (a timeout inside the handler stays the handler's)."""
    task = asyncio.get_running_loop().create_task(coro)

    def report(task: asyncio.Task[T]) -> None:
        if task.cancelled():
            return  # its client has gone; the handler's `finally` blocks have run
        exc = task.exception()
        if exc is None:
            on_result(task.result())
        else:
            on_error(exc)

    task.add_done_callback(report)
    return task

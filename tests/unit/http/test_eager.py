"""start_eagerly: a handler runs inline until its first real wait, then in a Task."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from typing import Any

import pytest

from pushup.http.eager import start_eagerly


class Outcomes:
    """Records what start_eagerly reports, and when."""

    def __init__(self) -> None:
        self.results: list[Any] = []
        self.errors: list[BaseException] = []
        self.done = asyncio.Event()

    def on_result(self, value: Any) -> None:
        self.results.append(value)
        self.done.set()

    def on_error(self, exc: BaseException) -> None:
        self.errors.append(exc)
        self.done.set()

    async def wait(self) -> None:
        await asyncio.wait_for(self.done.wait(), timeout=5.0)


async def test_a_handler_that_never_waits_runs_inline() -> None:
    outcomes = Outcomes()
    ran: list[str] = []

    async def helper() -> int:
        ran.append("helper")
        return 41

    async def handler() -> int:
        ran.append("handler")
        return await helper() + 1

    loop = asyncio.get_running_loop()
    tasks_before = asyncio.all_tasks(loop)
    task = start_eagerly(handler(), outcomes.on_result, outcomes.on_error)
    assert task is None
    assert outcomes.results == [42]
    assert outcomes.errors == []
    assert ran == ["handler", "helper"]
    assert asyncio.all_tasks(loop) == tasks_before


async def test_awaiting_a_finished_future_does_not_suspend() -> None:
    outcomes = Outcomes()
    future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    future.set_result("ready")

    async def handler() -> str:
        return await future

    assert start_eagerly(handler(), outcomes.on_result, outcomes.on_error) is None
    assert outcomes.results == ["ready"]


async def test_an_error_before_any_wait_is_reported_inline() -> None:
    outcomes = Outcomes()
    error = ValueError("bad input")

    async def handler() -> None:
        raise error

    assert start_eagerly(handler(), outcomes.on_result, outcomes.on_error) is None
    assert outcomes.errors == [error]
    assert outcomes.results == []


async def test_a_handler_that_waits_continues_in_a_task() -> None:
    outcomes = Outcomes()
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def handler() -> int:
        steps.append("before")
        value = await future
        steps.append("after")
        return value * 2

    task = start_eagerly(handler(), outcomes.on_result, outcomes.on_error)
    assert isinstance(task, asyncio.Task)
    # The part before the wait ran inline; nothing is reported yet.
    assert steps == ["before"]
    assert outcomes.results == []
    future.set_result(21)
    await outcomes.wait()
    assert steps == ["before", "after"]
    assert outcomes.results == [42]
    assert outcomes.errors == []
    await asyncio.wait_for(task, timeout=5.0)
    assert task.result() is None


async def test_several_waits_and_bare_yields_in_the_task() -> None:
    outcomes = Outcomes()
    loop = asyncio.get_running_loop()
    first: asyncio.Future[int] = loop.create_future()
    second: asyncio.Future[int] = loop.create_future()

    async def handler() -> list[int]:
        got = [await first]
        await asyncio.sleep(0)  # a bare yield
        got.append(await second)
        return got

    task = start_eagerly(handler(), outcomes.on_result, outcomes.on_error)
    assert task is not None
    first.set_result(1)
    loop.call_later(0.01, second.set_result, 2)
    await outcomes.wait()
    assert outcomes.results == [[1, 2]]


async def test_a_handler_starting_with_a_bare_yield_runs_in_a_task() -> None:
    outcomes = Outcomes()

    async def handler() -> str:
        await asyncio.sleep(0)
        return "yielded"

    task = start_eagerly(handler(), outcomes.on_result, outcomes.on_error)
    assert task is not None
    assert outcomes.results == []
    await outcomes.wait()
    assert outcomes.results == ["yielded"]


async def test_an_error_after_a_wait_is_reported_from_the_task() -> None:
    outcomes = Outcomes()
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    error = KeyError("late")

    async def handler() -> None:
        await future
        raise error

    task = start_eagerly(handler(), outcomes.on_result, outcomes.on_error)
    assert task is not None
    future.set_result(None)
    await outcomes.wait()
    assert outcomes.errors == [error]
    assert outcomes.results == []
    await asyncio.wait_for(task, timeout=5.0)  # the task itself ends cleanly


async def test_a_failed_future_raises_inside_the_handler() -> None:
    outcomes = Outcomes()
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    seen: list[BaseException] = []

    async def handler() -> int:
        try:
            return await future
        except RuntimeError as exc:
            seen.append(exc)
            raise

    task = start_eagerly(handler(), outcomes.on_result, outcomes.on_error)
    assert task is not None
    error = RuntimeError("engine down")
    future.set_exception(error)
    await outcomes.wait()
    assert seen == [error]
    assert outcomes.errors == [error]


def suspended_handler(future: asyncio.Future[int], events: list[str]) -> Coroutine[Any, Any, int]:
    """A handler that waits on `future` and records when it is closed."""

    async def handler() -> int:
        try:
            return await future
        finally:
            events.append("closed")

    return handler()


async def test_cancelling_the_waiting_task_closes_the_handler() -> None:
    outcomes = Outcomes()
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    events: list[str] = []
    coro = suspended_handler(future, events)
    task = start_eagerly(coro, outcomes.on_result, outcomes.on_error)
    assert task is not None
    # Let the task take its first step (a loop turn, not a delay): it then waits on the future.
    for _ in range(100):
        if future._callbacks:
            break
        await asyncio.sleep(0)
    assert future._callbacks, "the task never started waiting"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5.0)
    assert events == ["closed"]
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    assert future.cancelled()
    assert (outcomes.results, outcomes.errors) == ([], [])


async def test_cancelling_the_task_before_it_runs_closes_the_handler() -> None:
    """The task can be cancelled in the same loop iteration it was made in."""
    outcomes = Outcomes()
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    events: list[str] = []
    coro = suspended_handler(future, events)
    task = start_eagerly(coro, outcomes.on_result, outcomes.on_error)
    assert task is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5.0)
    assert events == ["closed"]
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    assert future.cancelled()
    assert (outcomes.results, outcomes.errors) == ([], [])

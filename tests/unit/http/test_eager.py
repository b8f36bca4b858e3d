"""start_eagerly: a handler runs inline; the futures it waits on step it on from their
done callbacks, with no Task, unless it asks for one with a bare yield."""

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


async def test_a_handler_that_waits_on_a_future_continues_without_a_task() -> None:
    outcomes = Outcomes()
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()
    steps: list[str] = []

    async def handler() -> int:
        steps.append("before")
        value = await future
        steps.append("after")
        assert asyncio.current_task() is None
        return value * 2

    tasks_before = asyncio.all_tasks(loop)
    running = start_eagerly(handler(), outcomes.on_result, outcomes.on_error)
    assert running is not None
    assert not isinstance(running, asyncio.Task)
    assert asyncio.all_tasks(loop) == tasks_before
    # The part before the wait ran inline; nothing is reported yet.
    assert steps == ["before"]
    assert outcomes.results == []
    future.set_result(21)
    await outcomes.wait()
    assert steps == ["before", "after"]
    assert outcomes.results == [42]
    assert outcomes.errors == []
    assert running.cancel() is False  # it has ended: nothing left to stop
    assert outcomes.results == [42]


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

    running = start_eagerly(handler(), outcomes.on_result, outcomes.on_error)
    assert running is not None
    first.set_result(1)
    loop.call_later(0.01, second.set_result, 2)
    await outcomes.wait()
    assert outcomes.results == [[1, 2]]


async def test_a_bare_yield_after_a_wait_hands_the_rest_to_a_task() -> None:
    """What a handler that needs `asyncio.current_task()` (timeouts) does."""
    outcomes = Outcomes()
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    tasks: list[asyncio.Task[Any] | None] = []

    async def handler() -> str:
        await future
        tasks.append(asyncio.current_task())
        await asyncio.sleep(0)
        tasks.append(asyncio.current_task())
        async with asyncio.timeout(5):  # needs a Task
            await asyncio.sleep(0.001)
        return "timed"

    running = start_eagerly(handler(), outcomes.on_result, outcomes.on_error)
    assert running is not None
    future.set_result(None)
    await outcomes.wait()
    assert outcomes.results == ["timed"]
    assert tasks[0] is None and isinstance(tasks[1], asyncio.Task)


async def test_a_timeout_inside_a_handler_in_its_task_stays_the_handlers() -> None:
    """The Task runs the handler itself, so the cancellation a timeout makes reaches the
    handler's own `except`, instead of ending the request unanswered."""
    outcomes = Outcomes()
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handler() -> str:
        await asyncio.sleep(0)  # asks for a Task
        try:
            async with asyncio.timeout(0.01):
                await never
        except TimeoutError:
            return "gave up waiting"
        return "unreachable"

    assert start_eagerly(handler(), outcomes.on_result, outcomes.on_error) is not None
    await outcomes.wait()
    assert outcomes.results == ["gave up waiting"]
    assert never.cancelled()


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

    running = start_eagerly(handler(), outcomes.on_result, outcomes.on_error)
    assert running is not None
    future.set_result(None)
    await outcomes.wait()
    assert outcomes.errors == [error]
    assert outcomes.results == []


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

    running = start_eagerly(handler(), outcomes.on_result, outcomes.on_error)
    assert running is not None
    error = RuntimeError("engine down")
    future.set_exception(error)
    await outcomes.wait()
    assert seen == [error]
    assert outcomes.errors == [error]


async def test_a_future_cancelled_by_another_hand_is_reported_as_an_error() -> None:
    outcomes = Outcomes()
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handler() -> int:
        return await future

    assert start_eagerly(handler(), outcomes.on_result, outcomes.on_error) is not None
    future.cancel()
    await outcomes.wait()
    assert [type(exc) for exc in outcomes.errors] == [asyncio.CancelledError]
    assert outcomes.results == []


def suspended_handler(future: asyncio.Future[int], events: list[str]) -> Coroutine[Any, Any, int]:
    """A handler that waits on `future` and records when it is closed."""

    async def handler() -> int:
        try:
            return await future
        finally:
            events.append("closed")

    return handler()


async def test_cancelling_a_handler_waiting_on_a_future_closes_it_at_once() -> None:
    """The connection is lost while the handler waits: its `finally` blocks run, what
    it waited on is cancelled, and nothing is reported."""
    outcomes = Outcomes()
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    events: list[str] = []
    coro = suspended_handler(future, events)
    running = start_eagerly(coro, outcomes.on_result, outcomes.on_error)
    assert running is not None
    assert running.cancel() is True
    assert events == ["closed"]
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    assert future.cancelled()
    assert running.cancel() is False  # once is enough
    await asyncio.sleep(0.01)  # the cancelled future's callbacks have run by now
    assert (outcomes.results, outcomes.errors) == ([], [])


async def test_cancelling_while_the_handler_runs_stops_it_at_its_next_wait() -> None:
    outcomes = Outcomes()
    loop = asyncio.get_running_loop()
    first: asyncio.Future[None] = loop.create_future()
    second: asyncio.Future[None] = loop.create_future()
    events: list[str] = []
    handle: list[Any] = []

    async def handler() -> None:
        try:
            await first
            handle[0].cancel()  # as if the client left while this step runs
            events.append("went on")
            await second
            events.append("never")
        finally:
            events.append("closed")

    coro = handler()
    running = start_eagerly(coro, outcomes.on_result, outcomes.on_error)
    handle.append(running)
    first.set_result(None)
    await asyncio.sleep(0.01)
    assert events == ["went on", "closed"]
    assert second.cancelled()
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    assert (outcomes.results, outcomes.errors) == ([], [])


async def test_cancelling_a_handler_in_its_task_closes_it() -> None:
    """After a bare yield a Task runs the handler: cancelling stops that Task."""
    outcomes = Outcomes()
    loop = asyncio.get_running_loop()
    first: asyncio.Future[None] = loop.create_future()
    second: asyncio.Future[None] = loop.create_future()
    events: list[str] = []

    async def handler() -> None:
        try:
            await first
            await asyncio.sleep(0)
            await second
        finally:
            events.append("closed")

    coro = handler()
    tasks_before = asyncio.all_tasks(loop)
    running = start_eagerly(coro, outcomes.on_result, outcomes.on_error)
    assert running is not None
    first.set_result(None)
    for _ in range(100):  # loop turns, not a delay: until the task waits on `second`
        if second._callbacks:
            break
        await asyncio.sleep(0)
    assert second._callbacks, "the task never started waiting"
    (task,) = asyncio.all_tasks(loop) - tasks_before
    assert running.cancel() is True
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5.0)
    assert events == ["closed"]
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    assert second.cancelled()
    assert (outcomes.results, outcomes.errors) == ([], [])


async def test_cancelling_the_task_before_it_runs_closes_the_handler() -> None:
    """A handler that starts with a bare yield gets a Task, which can be cancelled in
    the same loop iteration it was made in."""
    outcomes = Outcomes()
    events: list[str] = []

    async def handler() -> None:
        try:
            await asyncio.sleep(0)
        finally:
            events.append("closed")

    coro = handler()
    task = start_eagerly(coro, outcomes.on_result, outcomes.on_error)
    assert isinstance(task, asyncio.Task)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5.0)
    assert events == ["closed"]
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    assert (outcomes.results, outcomes.errors) == ([], [])


async def test_a_cancel_after_the_future_finished_but_before_its_callback_ran() -> None:
    """The client leaves in the same loop turn as the awaited future completes: the
    callback is already scheduled and must find nothing to step."""
    outcomes = Outcomes()
    future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    closed: list[str] = []

    async def handler() -> str:
        try:
            return await future
        finally:
            closed.append("finally")

    running = start_eagerly(handler(), outcomes.on_result, outcomes.on_error)
    assert running is not None
    future.set_result("late")  # schedules the done callback
    running.cancel()
    for _ in range(3):
        await asyncio.sleep(0)  # let the scheduled callback run
    assert (outcomes.results, outcomes.errors) == ([], [])
    assert closed == ["finally"]

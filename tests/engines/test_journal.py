"""The embedded engine with its journal: a restarted engine finds its channels and
cached messages again, drops what expired while it was down, never reuses an id, and
never shows a subscriber a message before it is committed."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from pushup.core.engine import Engine
from pushup.core.errors import ChannelsNotFound, EngineUnavailable, NameTaken
from pushup.core.model import Message
from pushup.engines.memory import Journal, MemoryEngine
from pushup.engines.memory.sqlite import DATABASE
from tests.engines.conftest import MakeEngine, RecordingListener, hits, same
from tests.engines.test_contract import alive, channel, ids, publish1, read
from tests.unit.fakes import T0, FakeClock


@pytest.fixture
def engine_kind() -> str:
    return "journal"


async def started(make_engine: MakeEngine, listener: RecordingListener, **kw: Any) -> Engine:
    engine = make_engine(**kw)
    await engine.start(listener)
    return engine


async def restarted(
    old: Engine, make_engine: MakeEngine, listener: RecordingListener, **kw: Any
) -> Engine:
    await old.close()
    return await started(make_engine, listener, **kw)


def rows(data_dir: Path, table: str) -> int:
    """Rows in one table of the journal, read by a connection of the test's own."""
    db = sqlite3.connect(data_dir / DATABASE)
    try:
        count: int = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return count
    finally:
        db.close()


def step(coroutine: Coroutine[Any, Any, Any]) -> asyncio.Future[None]:
    """Run an engine call up to its wait for the group commit, as a Task would, and
    give the future it waits on."""
    waiting = coroutine.send(None)
    assert isinstance(waiting, asyncio.Future)
    waiting._asyncio_future_blocking = False  # taken by us: it may be awaited again
    return waiting


async def until(probe: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


# -- restart -------------------------------------------------------------------------------


async def test_a_restarted_engine_has_its_channels_and_messages_back(
    make_engine: MakeEngine, listener: RecordingListener, clock: FakeClock
) -> None:
    engine = await started(make_engine, listener)
    a = await channel(engine, "a")
    b = await channel(engine, ttl=100)
    quiet = await channel(engine)
    clock.advance(1)
    m1 = await publish1(engine, [a, b], b'{"n":1}')
    m2 = await publish1(engine, ["a"], b'"two"')
    await engine.renew_channel(b, 50)
    before = {c: await engine.channel_info(c) for c in (a, b, quiet)}
    cached = hits(await read(engine, [a, b]))

    clock.advance(5)
    engine = await restarted(engine, make_engine, listener)
    assert {c: await engine.channel_info(c) for c in (a, b, quiet)} == before
    assert await engine.resolve(["a"]) == [a]
    assert hits(await read(engine, [a, b])) == cached
    assert ids(await read(engine, [a], since=m1.id)) == [m2.id]
    assert (await read(engine, [a], since=m1.id)).gap is False
    assert engine.high_water() >= m2.id
    with pytest.raises(NameTaken):
        await engine.create_channel(None, "a")
    # And it goes on: new ids above the old ones, the cache growing on.
    m3 = await publish1(engine, [a])
    assert m3.id > m2.id
    assert ids(await read(engine, [a])) == [m1.id, m2.id, m3.id]
    assert await channel(engine) > quiet


async def test_what_expired_while_down_is_gone(
    make_engine: MakeEngine, listener: RecordingListener, clock: FakeClock
) -> None:
    engine = await started(make_engine, listener, message_ttl_s=10)
    a = await channel(engine, ttl=100)
    short = await channel(engine, "short", ttl=5)
    before = engine.high_water()
    m1 = await publish1(engine, [a, short])
    clock.advance(6)
    m2 = await publish1(engine, [a])
    await engine.close()

    clock.advance(5)  # T0 + 11: short expired at T0 + 5, m1 aged out at T0 + 10
    engine = await started(make_engine, listener, message_ttl_s=10)
    assert not await alive(engine, short)
    assert not await alive(engine, "short")
    assert await channel(engine, "short") != short  # the name is free again
    result = await read(engine, [a], since=before)
    assert (ids(result), result.gap) == ([m2.id], True)
    result = await read(engine, [a], since=m1.id)
    assert (ids(result), result.gap) == ([m2.id], False)
    assert (await engine.channel_info(a)).last_message_id == m2.id


async def test_the_message_limit_and_its_gaps_hold_across_a_restart(
    make_engine: MakeEngine, listener: RecordingListener, clock: FakeClock
) -> None:
    engine = await started(make_engine, listener, max_messages=3)
    a = await channel(engine)
    before = engine.high_water()
    m1, m2, m3, m4 = [await publish1(engine, [a]) for _ in range(4)]
    engine = await restarted(engine, make_engine, listener, max_messages=3)
    result = await read(engine, [a], since=before)
    assert (ids(result), result.gap) == ([m2.id, m3.id, m4.id], True)
    assert (await read(engine, [a], since=m1.id)).gap is False
    # Restarted with a lower limit: the oldest go, and that is a gap too.
    engine = await restarted(engine, make_engine, listener, max_messages=1)
    result = await read(engine, [a], since=m2.id)
    assert (ids(result), result.gap) == ([m4.id], True)


async def test_ids_never_go_back_even_when_the_clock_did(
    make_engine: MakeEngine, listener: RecordingListener, clock: FakeClock, data_dir: Path
) -> None:
    engine = await started(make_engine, listener, message_ttl_s=1, channel_ttl_s=1)
    clock.advance(100)
    old_channel = await channel(engine)
    old = await publish1(engine, [old_channel])
    # Let everything expire and be compacted away: only the id marks are left.
    clock.advance(10)
    assert not await alive(engine, old_channel)
    await engine.close()
    journal = Journal(data_dir, message_ttl_s=1, clock=clock)
    engine = MemoryEngine(**_settings(1), clock=clock, journal=journal)
    await engine.start(listener)
    await journal.compact()
    assert (rows(data_dir, "messages"), rows(data_dir, "channels")) == (0, 0)
    await engine.close()

    clock.set(T0)  # 110 s back
    engine = await started(make_engine, listener, message_ttl_s=1, channel_ttl_s=1)
    assert engine.high_water() >= old.id
    new_channel = await channel(engine)
    assert new_channel > old_channel
    assert (await publish1(engine, [new_channel])).id > old.id


def _settings(ttl: float) -> dict[str, Any]:
    return {"message_ttl_s": ttl, "max_messages": 100, "channel_ttl_s": ttl}


# -- compaction ----------------------------------------------------------------------------


async def test_compaction_keeps_only_what_the_cache_holds(
    listener: RecordingListener, clock: FakeClock, data_dir: Path
) -> None:
    def make() -> tuple[MemoryEngine, Journal]:
        journal = Journal(data_dir, message_ttl_s=10, clock=clock)
        engine = MemoryEngine(
            message_ttl_s=10, max_messages=2, channel_ttl_s=1000, clock=clock, journal=journal
        )
        return engine, journal

    engine, journal = make()
    await engine.start(listener)
    a = await channel(engine)
    closing = await channel(engine)
    expiring = await channel(engine, ttl=5)
    before = engine.high_water()
    aged = [await publish1(engine, [a]) for _ in range(4)]  # two dropped by count
    await engine.publish([([closing], b"1"), ([closing, expiring], b"2")])
    await engine.close_channel(closing)
    await journal.compact()
    # The two messages `a` dropped and the one only `closing` held are gone.
    assert rows(data_dir, "messages") == 3
    assert rows(data_dir, "channels") == 2

    clock.advance(20)  # everything aged out, `expiring` expired
    fresh = await publish1(engine, [a])
    await journal.compact()
    assert rows(data_dir, "messages") == 1
    assert rows(data_dir, "channels") == 1

    await engine.close()
    engine, journal = make()
    await engine.start(listener)
    result = await read(engine, [a], since=before)
    assert (hits(result), result.gap) == ([(same(fresh), (a,))], True)
    result = await read(engine, [a], since=aged[-1].id)
    assert (ids(result), result.gap) == ([fresh.id], False)
    await engine.close()


# -- acknowledged means committed ----------------------------------------------------------


async def test_subscribers_see_a_publication_only_once_it_is_committed(
    engine: Engine, listener: RecordingListener
) -> None:
    a = await channel(engine)
    high_water = engine.high_water()
    publishing = engine.publish([([a], b"1")])
    commit = step(publishing)
    assert (await read(engine, [a])).hits == []
    assert engine.high_water() == high_water
    assert listener.published_calls == []

    await commit
    # Told before the publisher resumes.
    assert [m.data for m in listener.published_calls[0][0]] == [b"1"]
    with pytest.raises(StopIteration) as stop:
        publishing.send(None)
    (message,) = stop.value.value
    assert engine.high_water() == message.id
    assert ids(await read(engine, [a])) == [message.id]


async def test_one_group_commits_everything_of_a_loop_turn_and_tells_it_at_once(
    engine: Engine, listener: RecordingListener
) -> None:
    a = await channel(engine)
    b = await channel(engine)
    results = await asyncio.gather(
        *(publish1(engine, [c], b"%d" % i) for i, c in enumerate([a, b, a]))
    )
    assert [m.id for m in results] == sorted(m.id for m in results)
    assert len(listener.published_calls) == 1
    assert [m.id for m in listener.published_calls[0][0]] == [m.id for m in results]


async def test_handlers_stepped_eagerly_in_one_turn_share_a_group(
    engine: Engine, listener: RecordingListener
) -> None:
    """As the HTTP layer runs them (http/eager.py): several wait on one group at once."""
    from pushup.http.eager import start_eagerly

    a = await channel(engine)
    loop = asyncio.get_running_loop()
    done: list[asyncio.Future[Message]] = [loop.create_future() for _ in range(3)]

    def begin() -> None:
        for i, future in enumerate(done):
            start_eagerly(publish1(engine, [a], b"%d" % i), future.set_result, future.set_exception)

    loop.call_soon(begin)  # from a plain callback, as the protocol's data_received
    messages = await asyncio.wait_for(asyncio.gather(*done), timeout=10)
    assert [m.data for m in messages] == [b"0", b"1", b"2"]
    assert [[m.id for m in call] for call, _ in listener.published_calls] == [
        [m.id for m in messages]
    ]


async def test_a_close_is_told_once_committed(engine: Engine, listener: RecordingListener) -> None:
    a = await channel(engine)
    closing = engine.close_channel(a)
    commit = step(closing)
    assert not await alive(engine, a)
    assert listener.closed_calls == []
    await commit
    assert listener.closed_calls == [[a]]
    with pytest.raises(StopIteration):
        closing.send(None)


async def test_a_cancelled_publisher_does_not_cancel_the_others_commit(
    make_engine: MakeEngine, listener: RecordingListener
) -> None:
    engine = await started(make_engine, listener)
    a = await channel(engine)
    first = asyncio.create_task(engine.publish([([a], b"1")]))
    second = asyncio.create_task(engine.publish([([a], b"2")]))
    await asyncio.sleep(0)  # one loop turn: both run up to their wait on the same group
    first.cancel()
    (message,) = await second
    with pytest.raises(asyncio.CancelledError):
        await first
    # The cancelled publication had been recorded: it is committed all the same.
    assert [m.data for m, _ in (await read(engine, [a])).hits] == [b"1", b"2"]
    engine = await restarted(engine, make_engine, listener)
    assert ids(await read(engine, [a]))[-1] == message.id


async def test_changes_pending_at_close_are_written(
    make_engine: MakeEngine, listener: RecordingListener
) -> None:
    engine = await started(make_engine, listener)
    a = await channel(engine)
    publishing = engine.publish([([a], b'"last"')])
    step(publishing)
    await engine.close()
    with pytest.raises(StopIteration):
        publishing.send(None)
    engine = await started(make_engine, listener)
    assert [m.data for m, _ in (await read(engine, [a])).hits] == [b'"last"']


# -- the data directory --------------------------------------------------------------------


async def test_a_data_directory_serves_one_engine_at_a_time(
    make_engine: MakeEngine, listener: RecordingListener, data_dir: Path
) -> None:
    first = await started(make_engine, listener)
    second = make_engine()
    with pytest.raises(EngineUnavailable) as caught:
        await second.start(listener)
    message = str(caught.value)
    assert f"the data directory {data_dir} is in use by another pushup server" in message
    assert "\n" not in message
    await first.close()
    await second.start(listener)


async def test_an_unusable_data_directory_is_a_clear_error(
    listener: RecordingListener, clock: FakeClock, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    engine = MemoryEngine(
        **_settings(10), clock=clock, journal=Journal(blocker / "data", message_ttl_s=10)
    )
    with pytest.raises(EngineUnavailable, match="cannot use the data directory"):
        await engine.start(listener)
    await engine.close()

    newer = tmp_path / "newer"
    newer.mkdir()
    db = sqlite3.connect(newer / DATABASE)
    db.execute("PRAGMA user_version = 99")
    db.close()
    engine = MemoryEngine(**_settings(10), clock=clock, journal=Journal(newer, message_ttl_s=10))
    with pytest.raises(EngineUnavailable) as caught:
        await engine.start(listener)
    assert str(caught.value) == f"cannot open the journal in {newer}: unknown journal version 99"
    await engine.close()
    # The lock was let go, and nothing was touched: a working journal can take it.
    (newer / DATABASE).unlink()
    engine = MemoryEngine(**_settings(10), clock=clock, journal=Journal(newer, message_ttl_s=10))
    await engine.start(listener)
    await engine.close()


async def test_a_file_sqlite_finds_damaged_is_moved_aside_and_said(
    listener: RecordingListener,
    clock: FakeClock,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data_dir.mkdir()
    garbage = b"this is no database" * 100
    (data_dir / DATABASE).write_bytes(garbage)
    engine = MemoryEngine(**_settings(10), clock=clock, journal=Journal(data_dir, message_ttl_s=10))
    await engine.start(listener)
    a = await channel(engine)
    await publish1(engine, [a])
    await engine.close()
    (aside,) = data_dir.glob(f"{DATABASE}.damaged-*")
    assert aside.read_bytes() == garbage  # kept as it was, for a look
    (line,) = [r for r in caplog.records if r.name == "pushup.journal"]
    assert line.levelname == "ERROR"
    assert line.getMessage() == (
        f"the journal in {data_dir} did not get everything back: it starts empty "
        f"({DATABASE} is damaged (file is not a database): it is moved aside to {aside.name})"
    )


async def test_a_closed_channel_stays_closed(
    make_engine: MakeEngine, listener: RecordingListener
) -> None:
    engine = await started(make_engine, listener)
    a = await channel(engine, "a")
    await publish1(engine, [a])
    await engine.close_channel(a)
    engine = await restarted(engine, make_engine, listener)
    with pytest.raises(ChannelsNotFound):
        await engine.resolve([a])
    assert await channel(engine, "a") != a

"""The journal when things go wrong: writes that fail are answered at once and leave
nothing behind, rows damaged on disk are left out and said, and acknowledged changes
the journal no longer holds are said at start (by the `acknowledged` record), once."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pushup.core.engine import Publication
from pushup.core.errors import EngineUnavailable, StorageFull
from pushup.core.idempotency import IdempotencyKey, fingerprint
from pushup.engines.memory import Journal, MemoryEngine
from pushup.engines.memory.acked import ACKNOWLEDGED, AckFile
from pushup.engines.memory.checksums import channel_crc
from pushup.engines.memory.sqlite import DATABASE, SCHEMA_VERSION
from tests.engines.conftest import MakeEngine, RecordingListener
from tests.engines.test_contract import alive, channel, ids, publish1, read
from tests.engines.test_journal import restarted, rows, started, step, until
from tests.unit.fakes import T0, FakeClock


@pytest.fixture
def engine_kind() -> str:
    return "journal"


@pytest.fixture
async def journaled(clock: FakeClock, data_dir: Path, listener: RecordingListener) -> Any:
    """Start a journaled engine on the test's data directory and give it with its
    journal (to compact it); each is closed after the test."""
    made: list[MemoryEngine] = []

    async def start(**settings: Any) -> tuple[MemoryEngine, Journal]:
        journal = Journal(data_dir, message_ttl_s=300, clock=clock)
        engine = MemoryEngine(
            message_ttl_s=300,
            max_messages=settings.get("max_messages", 100),
            channel_ttl_s=3600,
            clock=clock,
            journal=journal,
        )
        made.append(engine)
        await engine.start(listener)
        return engine, journal

    yield start
    for engine in made:
        await engine.close()


def journal_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "pushup.journal"]


def tamper(data_dir: Path, *statements: str) -> None:
    """Change the journal behind the engine's back (it is closed), as damage would."""
    db = sqlite3.connect(data_dir / DATABASE)
    db.create_function("channel_crc", 6, channel_crc)  # to write a row as the journal would
    try:
        for statement in statements:
            db.execute(statement)
        db.commit()
    finally:
        db.close()


# -- writes that fail ----------------------------------------------------------------------


def failing_writes(monkeypatch: pytest.MonkeyPatch, error: Exception) -> list[bool]:
    """Make the journal's group writes raise `error` while the flag it gives is true."""
    failing = [True]
    write = Journal._write

    def flaky_write(self: Journal, rows: Any, acknowledged: Any) -> bool:
        if failing[0]:
            raise error
        return write(self, rows, acknowledged)

    monkeypatch.setattr(Journal, "_write", flaky_write)
    return failing


async def test_a_group_that_cannot_be_written_is_answered_at_once_and_leaves_nothing(
    make_engine: MakeEngine,
    listener: RecordingListener,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = await started(make_engine, listener)
    a = await channel(engine, "a")
    kept = await publish1(engine, [a], b"0")
    failing = failing_writes(monkeypatch, sqlite3.OperationalError("disk I/O error"))
    results = await asyncio.wait_for(
        asyncio.gather(
            publish1(engine, [a], b"1"),
            engine.create_channel(None, "b"),
            engine.renew_channel(a, 500),
            return_exceptions=True,
        ),
        timeout=10,
    )
    assert [type(result) for result in results] == [EngineUnavailable] * 3
    assert "disk I/O error" in str(results[0])
    # Nothing of it counts: not cached, not told, and the channel made is undone.
    assert ids(await read(engine, [a])) == [kept.id]
    info = await engine.channel_info(a)
    assert (info.messages, info.last_message_id) == (1, kept.id)
    assert not await alive(engine, "b")
    assert [m.data for call, _ in listener.published_calls for m in call] == [b"0"]
    # New changes are refused before they are made, until a write works again.
    with pytest.raises(EngineUnavailable):
        await publish1(engine, [a], b"2")
    lines = [r for r in caplog.records if "cannot write the journal" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None, lines

    failing[0] = False
    await until(lambda: "is written again" in caplog.text, "the journal to be written again")
    message = await publish1(engine, [a], b"3")
    assert ids(await read(engine, [a])) == [kept.id, message.id]
    assert (await engine.channel_info(a)).ttl_s == 500  # the renewal stayed, in memory
    await engine.create_channel(None, "b")
    engine = await restarted(engine, make_engine, listener)
    assert [m.data for m, _ in (await read(engine, [a])).hits] == [b"0", b"3"]
    assert (await engine.channel_info(a)).ttl_s == 500  # and was written with the next group
    assert await alive(engine, "b")


async def test_an_idempotency_answer_whose_group_is_given_up_leaves_its_key_free(
    make_engine: MakeEngine,
    listener: RecordingListener,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A retry that came while the first call's group was being written waits for it,
    and learns with it that nothing was stored; once writes work again it stores."""
    engine = await started(make_engine, listener)
    a = await channel(engine, "a")
    publication: list[Publication] = [([a], b"1")]
    key = IdempotencyKey("", "k", fingerprint(publication, batch=False), 300.0)
    failing = failing_writes(monkeypatch, sqlite3.OperationalError("disk I/O error"))
    results = await asyncio.wait_for(
        asyncio.gather(
            engine.publish_once(publication, key),
            engine.publish_once(publication, key),
            return_exceptions=True,
        ),
        timeout=10,
    )
    assert [type(result) for result in results] == [EngineUnavailable] * 2
    failing[0] = False
    await until(lambda: "is written again" in caplog.text, "the journal to be written again")
    messages, replayed = await engine.publish_once(publication, key)
    assert not replayed
    assert ids(await read(engine, [a])) == [messages[0].id]
    engine = await restarted(engine, make_engine, listener)
    again, replayed = await engine.publish_once(publication, key)
    assert replayed and again[0].id == messages[0].id


async def test_a_full_disk_is_its_own_error(
    make_engine: MakeEngine,
    listener: RecordingListener,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    data_dir: Path,
) -> None:
    engine = await started(make_engine, listener)
    a = await channel(engine)
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
    failing_writes(monkeypatch, full)
    with pytest.raises(StorageFull, match=f"the disk of {data_dir} is full"):
        await publish1(engine, [a])
    with pytest.raises(StorageFull):
        await publish1(engine, [a])
    assert f"the disk of the data directory {data_dir} is full" in caplog.text
    await engine.close()


# -- writes that are not where they should be ----------------------------------------------


async def test_a_publication_to_a_channel_closed_before_its_commit_is_cached_nowhere(
    journaled: Any, data_dir: Path
) -> None:
    engine, journal = await journaled()
    a = await channel(engine)
    b = await channel(engine)
    publishing = engine.publish([([a, b], b"1"), ([a], b"2")])
    commit = step(publishing)
    step(engine.close_channel(a))  # the same group: closed before the commit
    await commit
    assert [m.data for m, _ in (await read(engine, [b])).hits] == [b"1"]
    assert (await engine.channel_info(b)).messages == 1
    await journal.compact()  # the message only `a` held is deleted
    assert rows(data_dir, "messages") == 1
    await engine.close()
    engine, _ = await journaled()
    assert not await alive(engine, a)
    assert [m.data for m, _ in (await read(engine, [b])).hits] == [b"1"]


async def test_compaction_keeps_the_gap_of_an_evicted_message_even_unwritten_by_its_channel(
    journaled: Any, data_dir: Path
) -> None:
    engine, journal = await journaled(max_messages=2)
    a = await channel(engine)
    m1, _, _ = [await publish1(engine, [a]) for _ in range(3)]
    # `a` dropped m1 once the third message was committed: the row of `a` written
    # with that group does not say so, and nothing wrote it since.
    db = sqlite3.connect(data_dir / DATABASE)
    query = "SELECT dropped_through FROM channels WHERE id = ?"
    assert db.execute(query, (a,)).fetchone() == (0,)
    await journal.compact()  # deletes m1, and raises the gap mark itself
    assert db.execute(query, (a,)).fetchone() == (m1.id,)
    db.close()
    await engine.close()
    engine, _ = await journaled(max_messages=2)
    assert (await read(engine, [a], since=m1.id - 1)).gap


# -- damage ----------------------------------------------------------------------------------


async def test_damaged_rows_are_left_out_said_once_and_gone(
    make_engine: MakeEngine,
    listener: RecordingListener,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = await started(make_engine, listener)
    a = await channel(engine)
    b = await channel(engine, "b")
    m1, m2, m3 = [await publish1(engine, [a], b"%d" % i) for i in range(3)]
    await engine.close()
    # Still valid JSON and a valid name: only the checksums tell.
    tamper(
        data_dir,
        f"UPDATE messages SET data = CAST('42' AS BLOB) WHERE id = {m2.id}",
        f"UPDATE channels SET name = 'c' WHERE id = {b}",
    )
    engine = await started(make_engine, listener)
    assert ids(await read(engine, [a])) == [m1.id, m3.id]
    assert not await alive(engine, "b") and not await alive(engine, "c")
    (line,) = journal_lines(caplog)
    assert line.levelname == "ERROR"
    assert line.getMessage() == (
        f"the journal in {data_dir} did not get everything back: 1 message and 1 channel "
        "damaged on disk (checksum or decoding failed): left out, never served"
    )
    caplog.clear()
    engine = await restarted(engine, make_engine, listener)
    assert ids(await read(engine, [a])) == [m1.id, m3.id]
    assert journal_lines(caplog) == []


async def test_a_journal_of_the_first_version_is_brought_up_to_date(
    make_engine: MakeEngine,
    listener: RecordingListener,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its rows have no checksum: they are checked by decoding alone."""
    data_dir.mkdir()
    now_id = int(T0 * 1_000_000)
    tamper(
        data_dir,
        "PRAGMA auto_vacuum = INCREMENTAL",
        "CREATE TABLE channels (id INTEGER PRIMARY KEY, name TEXT, ttl_s REAL NOT NULL,"
        " expires_at REAL NOT NULL, last_message_id INTEGER, dropped_through INTEGER NOT NULL)",
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, channels TEXT NOT NULL,"
        " data BLOB NOT NULL)",
        "CREATE TABLE marks (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
        f"INSERT INTO channels VALUES (7, 'old', 600, {T0 + 600}, {now_id + 2}, 0)",
        f"INSERT INTO messages VALUES ({now_id + 1}, '7', CAST('{{\"n\":1}}' AS BLOB))",
        f"INSERT INTO messages VALUES ({now_id + 2}, '7', CAST('not json' AS BLOB))",
        "PRAGMA user_version = 1",
    )
    engine = await started(make_engine, listener)
    assert [m.data for m, _ in (await read(engine, [7])).hits] == [b'{"n":1}']
    assert "1 message damaged on disk" in caplog.text
    new = await publish1(engine, ["old"], b'"new"')
    assert new.id > now_id + 2
    caplog.clear()
    engine = await restarted(engine, make_engine, listener)
    assert [m.data for m, _ in (await read(engine, [7])).hits] == [b'{"n":1}', b'"new"']
    assert journal_lines(caplog) == []
    db = sqlite3.connect(data_dir / DATABASE)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (3,)
    assert db.execute(f"SELECT crc FROM messages WHERE id = {new.id}").fetchone()[0] is not None
    db.close()


async def test_a_journal_of_the_second_version_keeps_its_channels_and_gains_answers(
    make_engine: MakeEngine,
    listener: RecordingListener,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Version 3 adds a channel's retention and owner columns and the table of
    idempotency answers: rows checksummed by version 2 still pass their check, own
    nothing, and new rows carry their owner; an answer is kept across a restart."""
    data_dir.mkdir()
    tamper(
        data_dir,
        "PRAGMA auto_vacuum = INCREMENTAL",
        "CREATE TABLE channels (id INTEGER PRIMARY KEY, name TEXT, ttl_s REAL NOT NULL,"
        " expires_at REAL NOT NULL, last_message_id INTEGER, dropped_through INTEGER NOT NULL,"
        " crc INTEGER)",
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, channels TEXT NOT NULL,"
        " data BLOB NOT NULL, crc INTEGER)",
        "CREATE TABLE marks (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
        f"INSERT INTO channels VALUES (7, 'old', 600, {T0 + 600}, NULL, 0,"
        f" channel_crc(7, 'old', 600.0, {T0 + 600}, NULL, 0))",
        "PRAGMA user_version = 2",
    )
    engine = await started(make_engine, listener)
    assert (await engine.channel_info("old")).owner is None
    made = await engine.create_channel(None, None, owner="blog")
    publication: list[Publication] = [(["old"], b"1")]
    key = IdempotencyKey("", "k", fingerprint(publication, batch=False), 300.0)
    first, _ = await engine.publish_once(publication, key)
    engine = await restarted(engine, make_engine, listener)
    assert (await engine.channel_info(7)).owner is None
    assert (await engine.channel_info(made.id)).owner == "blog"
    again, replayed = await engine.publish_once(publication, key)
    assert replayed and [m.id for m in again] == [m.id for m in first]
    assert journal_lines(caplog) == []
    db = sqlite3.connect(data_dir / DATABASE)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert db.execute("SELECT count(*) FROM answers").fetchone() == (1,)
    db.close()


# -- acknowledged, and gone ----------------------------------------------------------------


async def test_the_record_of_acknowledgements_is_written_before_the_caller_resumes(
    make_engine: MakeEngine, listener: RecordingListener, data_dir: Path
) -> None:
    engine = await started(make_engine, listener)
    a = await channel(engine)
    m1 = await publish1(engine, [a])
    m2 = await publish1(engine, [a])
    record = AckFile(data_dir)
    acknowledged = record.open()
    record.close()
    assert acknowledged is not None
    assert (acknowledged.message_id, acknowledged.channel_id) == (m2.id, a)
    assert acknowledged.messages == 2 and m1.id < m2.id


async def test_acknowledged_messages_the_journal_lost_are_said_once_and_never_reissued(
    make_engine: MakeEngine,
    listener: RecordingListener,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = await started(make_engine, listener)
    a = await channel(engine)
    m1, _, m3 = [await publish1(engine, [a]) for _ in range(3)]
    await engine.close()
    # As a WAL cut short would leave it: the last two commits never happened.
    tamper(
        data_dir,
        f"DELETE FROM messages WHERE id > {m1.id}",
        "UPDATE marks SET value = 1 WHERE name = 'messages'",
        f"UPDATE channels SET last_message_id = {m1.id}, crc = channel_crc(id, name, ttl_s,"
        f" expires_at, {m1.id}, dropped_through)",
    )
    engine = await started(make_engine, listener)
    assert ids(await read(engine, [a])) == [m1.id]
    (line,) = journal_lines(caplog)
    assert line.levelname == "ERROR"
    message = line.getMessage()
    assert message.startswith(
        f"the journal in {data_dir} did not get everything back: 2 acknowledged messages up "
        f"to id {m3.id} ("
    )
    assert f"are missing: it ends at id {m1.id} (" in message
    assert message.endswith(
        f"({DATABASE}-wal was lost, cut short or damaged, or an older copy of the journal "
        "was put back)"
    )
    assert (await publish1(engine, [a])).id > m3.id
    caplog.clear()
    engine = await restarted(engine, make_engine, listener)
    assert journal_lines(caplog) == []


async def test_an_emptied_journal_is_said_and_its_ids_are_never_reissued(
    make_engine: MakeEngine,
    listener: RecordingListener,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = await started(make_engine, listener)
    a = await channel(engine)
    m1 = await publish1(engine, [a])
    await engine.close()
    (data_dir / DATABASE).write_bytes(b"")
    engine = await started(make_engine, listener)
    assert not await alive(engine, a)
    (line,) = journal_lines(caplog)
    assert line.getMessage().startswith(
        f"the journal in {data_dir} did not get everything back: it holds nothing, though "
        f"the server acknowledged 1 message up to id {m1.id} ("
    )
    assert line.getMessage().endswith(
        f"and channels up to id {a}: every channel and message is gone "
        f"({DATABASE} was missing or empty)"
    )
    assert await channel(engine) > a
    assert (await publish1(engine, [await channel(engine)])).id > m1.id


async def test_a_damaged_record_of_acknowledgements_is_said(
    make_engine: MakeEngine,
    listener: RecordingListener,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = await started(make_engine, listener)
    a = await channel(engine)
    await publish1(engine, [a])
    await engine.close()
    (data_dir / ACKNOWLEDGED).write_bytes(b"\x01" * 8192)
    engine = await started(make_engine, listener)
    assert len(ids(await read(engine, [a]))) == 1
    (line,) = journal_lines(caplog)
    assert line.getMessage() == (
        f"the journal in {data_dir} did not get everything back: its record of what was "
        f"acknowledged ({ACKNOWLEDGED}) is damaged: whether acknowledged changes are "
        "missing cannot be told this time"
    )
    caplog.clear()
    await publish1(engine, [a])
    engine = await restarted(engine, make_engine, listener)
    assert journal_lines(caplog) == []

"""The journal's SQLite file: its schema, and the statements the writer thread runs.

SQLite runs in WAL mode with `synchronous=FULL`: every commit fsyncs the WAL, so an
acknowledged change survives a crash of the process *and* of the machine. (`NORMAL`
fsyncs only at checkpoints: enough after a process crash, but a power loss could take
back acknowledged groups.) Group commit (`journal.py`) is what makes one fsync per
commit affordable.

Compaction keeps the file about as large as the cache: it deletes messages past their
age and channels past their expiry, and messages no channel holds any more, and hands
freed pages back to the file system.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pushup.core.model import ChannelId, Message, MessageId
from pushup.engines.memory.snapshot import ChannelState, Snapshot, StoredChannel, StoredMessage

DATABASE = "journal.sqlite3"
SCHEMA_VERSION = 1
_SCHEMA = (
    "CREATE TABLE channels (id INTEGER PRIMARY KEY, name TEXT, ttl_s REAL NOT NULL,"
    " expires_at REAL NOT NULL, last_message_id INTEGER, dropped_through INTEGER NOT NULL)",
    # `channels`: the message's channel ids, comma-separated.
    "CREATE TABLE messages (id INTEGER PRIMARY KEY, channels TEXT NOT NULL, data BLOB NOT NULL)",
    # The highest ids ever issued, kept after compaction deleted their rows.
    "CREATE TABLE marks (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
)
# A channel's `dropped_through` only grows: compaction raises it for messages it
# deletes, and a later write of the channel from memory must not lower it again.
_UPSERT_CHANNEL = (
    "INSERT INTO channels VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
    " name = excluded.name, ttl_s = excluded.ttl_s, expires_at = excluded.expires_at,"
    " last_message_id = excluded.last_message_id,"
    " dropped_through = max(dropped_through, excluded.dropped_through)"
)
_UPSERT_MARK = (
    "INSERT INTO marks VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET"
    " value = max(value, excluded.value)"
)
_WAL_LIMIT_BYTES = 64 * 1024 * 1024  # the WAL is cut back to this after checkpoints
# Rows of each kind one compaction step deletes, so a group never waits long for it.
COMPACT_ROWS = 5_000
_INSERT_ROWS = 256  # messages per INSERT statement (3 parameters each, at most 999)

# One transaction's rows, taken from memory on the loop thread when the group closes.
Rows = tuple[list[tuple[Any, ...]], list[tuple[int]], list[Message]]


def connect(path: Path) -> sqlite3.Connection:
    """Open the journal, creating it if need be."""
    # Opened here, then used only by the writer thread (and at close, once it is idle).
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            # Must come before the first table: lets compaction shrink the file.
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        elif version != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"unknown journal version {version}")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.DatabaseError(f"the file system does not allow WAL mode ({mode})")
        db.execute("PRAGMA synchronous = FULL")
        db.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT_BYTES}")
        if version == 0:
            with _transaction(db):
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.close()
        raise
    return db


def close(db: sqlite3.Connection) -> None:
    """Leave a tidy directory: everything in the database file, no WAL."""
    with contextlib.suppress(sqlite3.Error):
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def read(db: sqlite3.Connection) -> Snapshot:
    """Everything the journal holds."""
    channels = [
        StoredChannel(
            ChannelId(channel_id),
            name,
            ttl_s,
            expires_at,
            None if last is None else MessageId(last),
            dropped,
        )
        for channel_id, name, ttl_s, expires_at, last, dropped in db.execute(
            "SELECT id, name, ttl_s, expires_at, last_message_id, dropped_through"
            " FROM channels ORDER BY id"
        )
    ]
    messages = [
        StoredMessage(
            MessageId(message_id), tuple(ChannelId(int(c)) for c in text.split(",")), bytes(data)
        )
        for message_id, text, data in db.execute(
            "SELECT id, channels, data FROM messages ORDER BY id"
        )
    ]
    marks = dict(db.execute("SELECT name, value FROM marks").fetchall())
    last_channel = max(int(marks.get("channel_id", 0)), channels[-1].id if channels else 0)
    last_message = max(
        int(marks.get("message_id", 0)),
        messages[-1].id if messages else 0,
        *(c.last_message_id or 0 for c in channels),
    )
    return Snapshot(channels, messages, last_channel, last_message)


def rows(channels: Iterable[ChannelState], messages: list[Message]) -> Rows:
    """A group's rows, read from the live channels now, on the loop thread: a
    channel changed several times in one group is written once, as it ends up."""
    upserts: list[tuple[Any, ...]] = []
    deletes: list[tuple[int]] = []
    for channel in channels:
        if channel.closed:
            deletes.append((channel.id,))
        else:
            upserts.append(
                (
                    channel.id,
                    channel.name,
                    channel.ttl_s,
                    channel.expires_at,
                    channel.last_message_id,
                    channel.dropped_through,
                )
            )
    # Messages are immutable: the writer thread encodes them itself.
    return upserts, deletes, messages


def write(db: sqlite3.Connection, rows: Rows) -> None:
    """One group in one transaction: one fsync of the WAL at its commit."""
    upserts, deletes, messages = rows
    # Few statements, each for many rows: every statement hands the GIL to the
    # event loop and takes it back, which costs the most when the loop is busy.
    with _transaction(db):
        if deletes:
            # A deleted row no longer shows the id was issued: the mark does.
            db.execute(_UPSERT_MARK, ("channel_id", max(row[0] for row in deletes)))
            db.executemany("DELETE FROM channels WHERE id = ?", deletes)
        if upserts:
            db.executemany(_UPSERT_CHANNEL, upserts)
        for start in range(0, len(messages), _INSERT_ROWS):
            chunk = messages[start : start + _INSERT_ROWS]
            params: list[object] = []
            for m in chunk:
                params += (m.id, _encode_channels(m.channels), m.data)
            db.execute(_insert_messages(len(chunk)), params)


def compact_step(db: sqlite3.Connection, forgotten: array[int], horizon: int, now: float) -> bool:
    """Delete up to `COMPACT_ROWS` messages past their age (first raising each of
    their channels' `dropped_through`, so a restart still reports the gap), the
    forgotten ones, and expired channels. True if more messages are past their age."""
    with _transaction(db):
        # Rows about to go no longer show which ids were issued: the marks do.
        for mark, table in (("message_id", "messages"), ("channel_id", "channels")):
            db.execute(
                f"INSERT INTO marks SELECT ?, top FROM (SELECT max(id) AS top FROM {table})"
                " WHERE top IS NOT NULL"
                " ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
                (mark,),
            )
        aged = db.execute(
            "SELECT id, channels FROM messages WHERE id <= ? ORDER BY id LIMIT ?",
            (horizon, COMPACT_ROWS),
        ).fetchall()
        newest: dict[int, int] = {}
        for message_id, channels in aged:
            for channel_id in channels.split(","):
                newest[int(channel_id)] = message_id
        db.executemany(
            "UPDATE channels SET dropped_through = max(dropped_through, ?) WHERE id = ?",
            [(message_id, channel_id) for channel_id, message_id in newest.items()],
        )
        if aged:
            db.execute("DELETE FROM messages WHERE id <= ?", (aged[-1][0],))
        db.executemany("DELETE FROM messages WHERE id = ?", ((i,) for i in forgotten))
        db.execute("DELETE FROM channels WHERE expires_at <= ?", (now,))
    more = len(aged) == COMPACT_ROWS
    if not more:
        _give_back_free_pages(db)
    return more


@functools.cache
def _insert_messages(rows: int) -> str:
    return "INSERT OR REPLACE INTO messages VALUES " + ",".join(["(?, ?, ?)"] * rows)


def _encode_channels(channels: tuple[ChannelId, ...]) -> str:
    return str(channels[0]) if len(channels) == 1 else ",".join(map(str, channels))


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _give_back_free_pages(db: sqlite3.Connection) -> None:
    """Shrink the file once a good part of it is free pages (after many deletions)."""
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    total = db.execute("PRAGMA page_count").fetchone()[0]
    if free >= 256 and free * 4 >= total:
        db.execute("PRAGMA incremental_vacuum")

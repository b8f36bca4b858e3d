"""The journal's SQLite file: its schema, and the statements the writer thread runs.

SQLite runs in WAL mode with `synchronous=FULL`: every commit fsyncs the WAL, so an
acknowledged change survives a crash of the process *and* of the machine. (`NORMAL`
fsyncs only at checkpoints: enough after a process crash, but a power loss could take
back acknowledged groups.) Group commit (`journal.py`) is what makes one fsync per
commit affordable.

Compaction keeps the file about as large as the cache: it deletes messages past their
age and channels past their expiry, and messages no channel holds any more, and hands
freed pages back to the file system.

Every row carries a CRC32 of its values (`checksums.py`), computed as it is written;
`read` checks it and decodes every message as JSON, and leaves out (and counts) rows
that fail, so damage that SQLite cannot see (its own checks cover only the file's
structure) is never served. Rows written before version 2 have no checksum: they are
checked by decoding alone. Version 3 adds each channel's own retention
(`message_ttl_s`, `max_messages`) and its owner (the publisher key that created it),
each in its checksum only when there is one, so older rows check as they did.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import struct
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from pushup.core import idempotency
from pushup.core.idempotency import Answer
from pushup.core.model import ChannelId, Message, MessageId, Retention
from pushup.engines.memory.checksums import answer_crc, channel_crc, message_crc
from pushup.engines.memory.snapshot import ChannelState, Snapshot, StoredChannel, StoredMessage

DATABASE = "journal.sqlite3"
SCHEMA_VERSION = 3
# First answers to idempotency keys (`answer`: core/idempotency.py's JSON), deleted by
# compaction once past `expires_at`.
_ANSWERS = (
    "CREATE TABLE answers (digest TEXT PRIMARY KEY, answer BLOB NOT NULL,"
    " expires_at REAL NOT NULL, crc INTEGER NOT NULL)"
)
_SCHEMA = (
    # `message_ttl_s`, `max_messages`: the channel's own retention (NULL: the server's).
    "CREATE TABLE channels (id INTEGER PRIMARY KEY, name TEXT, ttl_s REAL NOT NULL,"
    " expires_at REAL NOT NULL, last_message_id INTEGER, dropped_through INTEGER NOT NULL,"
    " crc INTEGER, message_ttl_s REAL, max_messages INTEGER, owner TEXT)",
    # `channels`: the message's channel ids, comma-separated.
    "CREATE TABLE messages (id INTEGER PRIMARY KEY, channels TEXT NOT NULL, data BLOB NOT NULL,"
    " crc INTEGER)",
    # The highest ids ever issued, kept after compaction deleted their rows; and
    # `messages`, how many were ever committed.
    "CREATE TABLE marks (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    _ANSWERS,
)
# From each older version to the next; rows already there keep a NULL checksum.
_MIGRATIONS = {
    1: (
        "ALTER TABLE channels ADD COLUMN crc INTEGER",
        "ALTER TABLE messages ADD COLUMN crc INTEGER",
    ),
    # Channels of older versions keep the server's retention (NULL) and have no owner;
    # idempotency keys' answers get their table.
    2: (
        "ALTER TABLE channels ADD COLUMN message_ttl_s REAL",
        "ALTER TABLE channels ADD COLUMN max_messages INTEGER",
        "ALTER TABLE channels ADD COLUMN owner TEXT",
        _ANSWERS,
    ),
}
# A channel's `dropped_through` only grows: compaction raises it for messages it
# deletes, and a later write of the channel from memory must not lower it again. The
# checksum, computed by the writer with the row, is computed again by SQLite in that
# rare case, for the row as it ends up.
_UPSERT_CHANNEL = (
    "INSERT INTO channels (id, name, ttl_s, expires_at, last_message_id, dropped_through,"
    " message_ttl_s, max_messages, owner, crc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET"
    " name = excluded.name, ttl_s = excluded.ttl_s, expires_at = excluded.expires_at,"
    " last_message_id = excluded.last_message_id, owner = excluded.owner,"
    " dropped_through = max(dropped_through, excluded.dropped_through),"
    " message_ttl_s = excluded.message_ttl_s, max_messages = excluded.max_messages,"
    " crc = CASE WHEN dropped_through > excluded.dropped_through"
    " THEN channel_crc(excluded.id, excluded.name, excluded.ttl_s, excluded.expires_at,"
    " excluded.last_message_id, dropped_through, excluded.message_ttl_s,"
    " excluded.max_messages, excluded.owner) ELSE excluded.crc END"
)
# A damaged row keeps a checksum that does not match: compaction never blesses it.
_RAISE_GAP_MARK = (
    "UPDATE channels SET dropped_through = max(dropped_through, ?1), crc = CASE"
    " WHEN crc = channel_crc(id, name, ttl_s, expires_at, last_message_id, dropped_through,"
    " message_ttl_s, max_messages, owner)"
    " THEN channel_crc(id, name, ttl_s, expires_at, last_message_id,"
    " max(dropped_through, ?1), message_ttl_s, max_messages, owner) ELSE crc END"
    " WHERE id = ?2"
)
_UPSERT_MARK = (
    "INSERT INTO marks VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET"
    " value = max(value, excluded.value)"
)
_WAL_LIMIT_BYTES = 64 * 1024 * 1024  # the WAL is cut back to this after checkpoints
# Rows of each kind one compaction step deletes, so a group never waits long for it.
COMPACT_ROWS = 5_000
_INSERT_ROWS = 200  # messages per INSERT statement (4 parameters each, at most 999)

# One transaction's rows, taken from memory on the loop thread when the group closes.
Rows = tuple[list[tuple[Any, ...]], list[tuple[int]], list[Message], list[Answer]]


class Damaged(sqlite3.DatabaseError):
    """The file is damaged where SQLite itself can see it: it cannot be trusted."""


def connect(path: Path) -> sqlite3.Connection:
    """Open the journal, creating it if need be, or bringing an older one up to date.
    Raises Damaged when SQLite finds the file damaged."""
    # Opened here, then used only by the writer thread (and at close, once it is idle).
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.create_function("channel_crc", 9, channel_crc, deterministic=True)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            # Must come before the first table: lets compaction shrink the file.
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        elif not 0 < version <= SCHEMA_VERSION:
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
        else:
            _check_structure(db)
        if 0 < version < SCHEMA_VERSION:
            with _transaction(db):
                for older in range(version, SCHEMA_VERSION):
                    for statement in _MIGRATIONS[older]:
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.DatabaseError as exc:
        db.close()
        if _says_damaged(exc):
            raise Damaged(str(exc)) from None
        raise
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
    """Everything the journal holds that passes its checks; raises Damaged when SQLite
    finds the file damaged while reading it."""
    # Raw bytes for text too: a damaged text value may not even be UTF-8.
    db.text_factory = bytes
    try:
        channels, damaged_channels = _read_channels(db)
        messages, damaged_messages = _read_messages(db)
        answers = _read_answers(db)
        marks = {
            name.decode(errors="replace"): value
            for name, value in db.execute("SELECT name, value FROM marks")
            if isinstance(name, bytes) and isinstance(value, int)
        }
    except sqlite3.DatabaseError as exc:
        if _says_damaged(exc):
            raise Damaged(str(exc)) from None
        raise
    finally:
        db.text_factory = str
    last_channel = max(marks.get("channel_id", 0), channels[-1].id if channels else 0)
    last_message = max(
        marks.get("message_id", 0),
        messages[-1].id if messages else 0,
        *(c.last_message_id or 0 for c in channels),
    )
    return Snapshot(
        channels,
        messages,
        last_channel,
        last_message,
        damaged_channels,
        damaged_messages,
        marks.get("messages", 0),
        answers,
    )


def _read_channels(db: sqlite3.Connection) -> tuple[list[StoredChannel], list[int]]:
    """The channel rows that pass their checks, and the ids of those that do not."""
    channels: list[StoredChannel] = []
    damaged: list[int] = []
    for row in db.execute(
        "SELECT id, name, ttl_s, expires_at, last_message_id, dropped_through,"
        " message_ttl_s, max_messages, owner, crc FROM channels ORDER BY id"
    ):
        channel_id, raw_name, ttl_s, expires_at, last, dropped, keep_s, cap, raw_owner, crc = row
        try:
            name = None if raw_name is None else raw_name.decode()
            owner = None if raw_owner is None else raw_owner.decode()
            if not (
                isinstance(ttl_s, float)
                and isinstance(expires_at, float)
                and isinstance(last, int | None)
                and isinstance(dropped, int)
                and isinstance(keep_s, float | None)
                and isinstance(cap, int | None)
                and (crc is None or crc == channel_crc(*row[:9]))
            ):
                raise ValueError("not as written")
        except (ValueError, AttributeError, struct.error):  # UnicodeDecodeError is one
            damaged.append(channel_id)
            continue
        channels.append(
            StoredChannel(
                ChannelId(channel_id),
                name,
                ttl_s,
                expires_at,
                None if last is None else MessageId(last),
                dropped,
                Retention(keep_s, cap),
                owner,
            )
        )
    return channels, damaged


def _read_messages(db: sqlite3.Connection) -> tuple[list[StoredMessage], list[int]]:
    """The message rows that pass their checks, and the ids of those that do not."""
    messages: list[StoredMessage] = []
    damaged: list[int] = []
    loads = orjson.loads
    for message_id, channels, data, crc in db.execute(
        "SELECT id, channels, data, crc FROM messages ORDER BY id"
    ):
        try:
            if not isinstance(channels, bytes) or not isinstance(data, bytes):
                raise ValueError("not as written")
            if crc is not None and crc != message_crc(message_id, channels, data):
                raise ValueError("checksum")
            channel_ids = tuple(ChannelId(int(c)) for c in channels.split(b","))
            loads(data)  # what is served must be JSON, whatever the checksum said
        except ValueError:  # orjson.JSONDecodeError is one
            damaged.append(message_id)
            continue
        messages.append(StoredMessage(MessageId(message_id), channel_ids, data))
    return messages, damaged


def _read_answers(db: sqlite3.Connection) -> list[Answer]:
    """The answers kept for idempotency keys that pass their checks. A damaged one is
    left out (compaction deletes it once expired): its key is free again, which is all
    a lost answer can cost."""
    answers = []
    for raw, crc in db.execute("SELECT answer, crc FROM answers"):
        if not isinstance(raw, bytes) or crc != answer_crc(raw):
            continue
        try:
            answers.append(idempotency.decode(raw))
        except ValueError:
            continue
    return answers


def drop_damaged(db: sqlite3.Connection, channel_ids: list[int], message_ids: list[int]) -> None:
    """Delete rows that failed their checks: reported once, never read again, and no
    later statement meets their damaged values."""
    with _transaction(db):
        db.executemany("DELETE FROM channels WHERE id = ?", ((i,) for i in channel_ids))
        db.executemany("DELETE FROM messages WHERE id = ?", ((i,) for i in message_ids))


def rows(channels: Iterable[ChannelState], messages: list[Message], answers: list[Answer]) -> Rows:
    """A group's rows, read from the live channels now, on the loop thread: a
    channel changed several times in one group is written once, as it ends up. Its
    newest message is the group's, which the cache takes only once committed."""
    newest: dict[int, int] = {}
    for message in messages:
        for channel_id in message.channels:
            newest[channel_id] = message.id
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
                    float(channel.ttl_s),
                    float(channel.expires_at),
                    newest.get(channel.id, channel.last_message_id),
                    channel.dropped_through,
                    channel.retention.message_ttl_s,
                    channel.retention.max_messages,
                    channel.owner,
                )
            )
    # Messages and answers are immutable: the writer thread encodes them itself.
    return upserts, deletes, messages, answers


def write(db: sqlite3.Connection, rows: Rows, committed_messages: int) -> None:
    """One group in one transaction: one fsync of the WAL at its commit.
    `committed_messages`: how many messages the journal holds committed with it."""
    upserts, deletes, messages, answers = rows
    # Few statements, each for many rows: every statement hands the GIL to the
    # event loop and takes it back, which costs the most when the loop is busy.
    with _transaction(db):
        if deletes:
            # A deleted row no longer shows the id was issued: the mark does.
            db.execute(_UPSERT_MARK, ("channel_id", max(row[0] for row in deletes)))
            db.executemany("DELETE FROM channels WHERE id = ?", deletes)
        if upserts:
            db.executemany(_UPSERT_CHANNEL, [(*row, channel_crc(*row)) for row in upserts])
        if messages:
            db.execute(_UPSERT_MARK, ("messages", committed_messages))
        for start in range(0, len(messages), _INSERT_ROWS):
            chunk = messages[start : start + _INSERT_ROWS]
            params: list[object] = []
            for m in chunk:
                channels = _encode_channels(m.channels)
                params += (m.id, channels, m.data, message_crc(m.id, channels.encode(), m.data))
            db.execute(_insert_messages(len(chunk)), params)
        if answers:
            encoded = [(a.digest, idempotency.encode(a), a.expires_at) for a in answers]
            db.executemany(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)",
                [(digest, raw, expires_at, answer_crc(raw)) for digest, raw, expires_at in encoded],
            )


def keep_marks(db: sqlite3.Connection, marks: dict[str, int]) -> None:
    """Raise the marks to at least these values (ids issued, messages committed)."""
    with _transaction(db):
        db.executemany(_UPSERT_MARK, list(marks.items()))


def compact_step(db: sqlite3.Connection, forgotten: array[int], horizon: int, now: float) -> bool:
    """Delete up to `COMPACT_ROWS` messages past their age and the forgotten ones (first
    raising each of their channels' `dropped_through`, so a restart still reports the
    gap even if the channel's own row was not written since), and expired channels.
    True if more messages are past their age."""
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
        going = aged
        if forgotten:
            going = (
                aged
                + db.execute(
                    "SELECT id, channels FROM messages WHERE id IN (SELECT value FROM json_each(?))"
                    " ORDER BY id",
                    (orjson.dumps(forgotten.tolist()).decode(),),
                ).fetchall()
            )
        newest: dict[int, int] = {}
        for message_id, channels in going:
            for channel_id in channels.split(","):
                newest[int(channel_id)] = max(newest.get(int(channel_id), 0), message_id)
        db.executemany(
            _RAISE_GAP_MARK,
            [(message_id, channel_id) for channel_id, message_id in newest.items()],
        )
        if aged:
            db.execute("DELETE FROM messages WHERE id <= ?", (aged[-1][0],))
        db.executemany("DELETE FROM messages WHERE id = ?", ((i,) for i in forgotten))
        db.execute("DELETE FROM channels WHERE expires_at <= ?", (now,))
        db.execute("DELETE FROM answers WHERE expires_at <= ?", (now,))
    more = len(aged) == COMPACT_ROWS
    if not more:
        _give_back_free_pages(db)
    return more


@functools.cache
def _insert_messages(rows: int) -> str:
    return "INSERT OR REPLACE INTO messages VALUES " + ",".join(["(?, ?, ?, ?)"] * rows)


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


def _check_structure(db: sqlite3.Connection) -> None:
    """Raise Damaged if SQLite finds the file's structure damaged (its pages, lists
    and counts; not the values in the rows, which `read` checks)."""
    problems = [row[0] for row in db.execute("PRAGMA quick_check(1)")]
    if problems != ["ok"]:
        # One line, without the heading SQLite puts above its first finding.
        raise Damaged(" ".join(problems[0].replace("*** in database main ***", "").split()))


def _says_damaged(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, Damaged) or (
        code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    )

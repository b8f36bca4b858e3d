"""Local persistence for the embedded engine: its changes, journaled in SQLite.

The memory engine stays the truth while it runs; the journal mirrors its channels and
cached messages so that a restarted server finds them again. Changes are committed in
groups: whatever was recorded in one turn of the event loop, or while the previous
group was being written, goes into one transaction on one background thread, so a
burst of publications costs one fsync, not one each. Callers wait for `durable()`, so
a change is acknowledged only once it is on disk.

SQLite runs in WAL mode with `synchronous=FULL`: every commit fsyncs the WAL, so an
acknowledged change survives a crash of the process *and* of the machine. (`NORMAL`
fsyncs only at checkpoints: enough after a process crash, but a power loss could take
back acknowledged groups.) Group commit is what makes one fsync per commit affordable.

The journal stays about as large as the cache: a periodic compaction deletes messages
past their age and channels past their expiry, messages no channel holds any more go
too, and freed pages are handed back to the file system. The data directory is
locked (`flock` on its `lock` file) for the journal's life, so two servers never
share one; the lock dies with the process, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import math
import os
import sqlite3
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from pushup.core.errors import EngineUnavailable
from pushup.core.model import ChannelId, Message, MessageId

log = logging.getLogger("pushup.journal")

DATABASE = "journal.sqlite3"
LOCK = "lock"
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
_COMPACT_ROWS = 5_000
_FORGET_BATCH = 20_000  # forgotten ids that start a compaction before its time
_INSERT_ROWS = 256  # messages per INSERT statement (3 parameters each, at most 999)
_RETRY_MIN_S = 0.05
_RETRY_MAX_S = 2.0
_CLOSE_TIMEOUT_S = 10.0


class ChannelState(Protocol):
    """What the journal reads of a live channel when it writes it."""

    @property
    def id(self) -> ChannelId: ...
    @property
    def name(self) -> str | None: ...
    @property
    def ttl_s(self) -> float: ...
    @property
    def expires_at(self) -> float: ...
    @property
    def last_message_id(self) -> MessageId | None: ...
    @property
    def dropped_through(self) -> int: ...
    @property
    def closed(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class StoredChannel:
    """A channel as the journal last wrote it."""

    id: ChannelId
    name: str | None
    ttl_s: float
    expires_at: float
    last_message_id: MessageId | None
    dropped_through: int


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: MessageId
    channels: tuple[ChannelId, ...]
    data: bytes


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the journal holds, in id order; expired entries included (the
    engine decides what expired while it was down)."""

    channels: list[StoredChannel]
    messages: list[StoredMessage]
    # Every id issued before is at or below these, even when its row is gone.
    last_channel_id: int
    last_message_id: int


@dataclass(slots=True, eq=False)
class _Group:
    """Changes collected for one transaction, and who waits for its commit."""

    channels: dict[ChannelId, ChannelState] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    # Run once committed, before any waiter resumes (the engine tells its listener).
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    # One future per caller: a caller cancelled (its client left) cancels only its own.
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


# One transaction's rows, taken from memory on the loop thread when the group closes.
_Rows = tuple[list[tuple[Any, ...]], list[tuple[int]], list[Message]]


class Journal:
    """The data directory of one embedded engine: a lock and an SQLite journal."""

    def __init__(
        self,
        directory: Path | str,
        *,
        message_ttl_s: float,
        clock: Callable[[], float] = time.time,
        compact_every_s: float = 30.0,
    ) -> None:
        # Relative to the working directory at start-up, shown absolute in errors.
        self.directory = Path(directory).absolute()
        self._message_ttl_s = message_ttl_s
        self._clock = clock
        self._compact_every_s = compact_every_s
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._collecting: _Group | None = None
        # A job is with the writer thread (or waits to be retried after a failure).
        self._busy = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._forgotten: array[int] = array("q")
        self._compact_due = False
        # Whose turn it is when both a group and a compaction step wait.
        self._compacting_turn = True
        self._compact_timer: asyncio.TimerHandle | None = None
        self._compacted: list[asyncio.Future[None]] = []
        # While writes fail: the error, the job to retry and when.
        self._failure: BaseException | None = None
        self._retry_s = 0.0
        self._retry: tuple[asyncio.TimerHandle, _Group | None] | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    def open(self) -> Snapshot:
        """Lock the directory, open or create the journal, and read back what it holds.
        Raises EngineUnavailable (with a one-line reason) when it cannot."""
        self._loop = asyncio.get_running_loop()
        self._lock()
        try:
            self._db = _connect(self.directory / DATABASE)
            snapshot = _read(self._db)
        except (sqlite3.Error, OSError) as exc:
            self._unlock()
            raise EngineUnavailable(f"cannot open the journal in {self.directory}: {exc}") from None
        except BaseException:
            self._unlock()
            raise
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="pushup-journal")
        # Start with a compaction: drop what expired while the server was down.
        self._compact_tick()
        return snapshot

    async def close(self) -> None:
        """Write what is still pending, then let go of the database and the lock."""
        if self._closed:
            return
        self._closed = True
        if self._compact_timer is not None:
            self._compact_timer.cancel()
        self._compact_due = False
        if self._writer is not None:
            try:
                await asyncio.wait_for(self._idle.wait(), _CLOSE_TIMEOUT_S)
            except TimeoutError:
                self._abandon()
            self._writer.shutdown(wait=True)
            self._writer = None
        for waiter in self._compacted:
            waiter.cancel()
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                # Leave a tidy directory: everything in the database file, no WAL.
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None
        self._unlock()

    # -- recording changes (loop thread) ---------------------------------------------

    def check(self) -> None:
        """Refuse a change while the journal cannot be written, before it is made."""
        if self._failure is not None:
            raise EngineUnavailable(
                f"cannot write the journal in {self.directory}: {self._failure}"
            )

    def channel(self, channel: ChannelState) -> None:
        """Write this channel as it is when its group is committed (deleted if closed)."""
        self._group().channels[channel.id] = channel

    def messages(self, messages: Sequence[Message]) -> None:
        self._group().messages.extend(messages)

    def forget(self, message_id: int) -> None:
        """No channel holds this message any more: delete it at the next compaction."""
        self._forgotten.append(message_id)
        if len(self._forgotten) >= _FORGET_BATCH and not self._compact_due:
            self._compact_due = True
            self._pump()

    def durable(self) -> asyncio.Future[None]:
        """A future of the caller's own, done once every change recorded so far is
        committed; it fails with EngineUnavailable if the server stops first."""
        assert self._loop is not None
        waiter = self._loop.create_future()
        self._group().waiters.append(waiter)
        return waiter

    def group(self) -> object:
        """The group now collecting changes: the same object until it is written."""
        return self._group()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the group now collecting is committed, before any of its
        waiters resumes; never, if it cannot be written before the server stops."""
        self._group().after_commit.append(callback)

    async def compact(self) -> None:
        """Compact now and wait until it is done (periodic compaction runs by itself)."""
        assert self._loop is not None
        waiter = self._loop.create_future()
        self._compacted.append(waiter)
        self._compact_due = True
        self._pump()
        await waiter

    # -- group commit (loop thread) --------------------------------------------------

    def _group(self) -> _Group:
        group = self._collecting
        if group is None:
            if self._closed or self._loop is None:
                raise EngineUnavailable("the journal is closed: the server is stopping")
            group = self._collecting = _Group()
            self._idle.clear()
            if not self._busy:
                # At the end of this loop turn, so everything recorded in it joins.
                self._loop.call_soon(self._pump)
        return group

    def _pump(self) -> None:
        """Give the idle writer its next job: the collected group, or a compaction step
        when one is due (they alternate, so neither waits for the other for long)."""
        if self._busy or self._writer is None or self._loop is None:
            return
        job: Callable[[], bool]
        group = self._collecting
        if self._compact_due and (group is None or self._compacting_turn):
            self._compact_due = False
            self._compacting_turn = False
            forgotten = self._forgotten[:_COMPACT_ROWS]
            del self._forgotten[:_COMPACT_ROWS]
            now = self._clock()
            # Expired in memory when `id / 1e6 + ttl <= now`; one µs of margin for floats.
            horizon = math.floor((now - self._message_ttl_s) * 1_000_000) - 1
            job = partial(self._compact_step, forgotten, horizon, now)
            group = None
        elif group is not None:
            self._collecting = None
            self._compacting_turn = True
            job = partial(self._write, _rows(group))
        else:
            self._idle.set()
            return
        self._start(job, group)

    def _start(self, job: Callable[[], bool], group: _Group | None) -> None:
        assert self._loop is not None and self._writer is not None
        self._retry = None
        self._busy = True
        self._idle.clear()
        running = self._loop.run_in_executor(self._writer, job)
        running.add_done_callback(partial(self._finished, job, group))

    def _finished(
        self, job: Callable[[], bool], group: _Group | None, running: asyncio.Future[bool]
    ) -> None:
        self._busy = False
        exc = running.exception()
        if exc is not None:
            self._failed(job, group, exc)
            return
        if self._failure is not None:
            log.warning("the journal in %s is written again", self.directory)
            self._failure = None
            self._retry_s = 0.0
        if group is not None:
            for callback in group.after_commit:
                callback()
            for waiter in group.waiters:
                if not waiter.done():  # cancelled: its caller has gone
                    waiter.set_result(None)
        elif running.result() or len(self._forgotten) >= (1 if self._compacted else _FORGET_BATCH):
            self._compact_due = True  # more to compact: another step after the next group
        elif not self._compact_due:
            waiters, self._compacted = self._compacted, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self._pump()

    def _failed(self, job: Callable[[], bool], group: _Group | None, exc: BaseException) -> None:
        """Keep the job and retry it with a growing delay: the changes stay in memory
        and their callers wait; new changes are refused (`check`) meanwhile."""
        assert self._loop is not None
        if self._failure is None:
            log.error(
                "cannot write the journal in %s; retrying, new changes get 503 meanwhile",
                self.directory,
                exc_info=exc,
            )
        self._failure = exc
        self._retry_s = min(max(self._retry_s * 2, _RETRY_MIN_S), _RETRY_MAX_S)
        self._busy = True  # the writer keeps this job until it succeeds
        timer = self._loop.call_later(self._retry_s, self._start, job, group)
        self._retry = (timer, group)

    def _abandon(self) -> None:
        """Stopping while writes fail: answer the waiting callers with an error."""
        pending = [self._collecting]
        self._collecting = None
        if self._retry is not None:
            timer, group = self._retry
            timer.cancel()
            pending.append(group)
            self._retry = None
        log.error(
            "stopping with changes not written to the journal in %s: %s",
            self.directory,
            self._failure,
        )
        for group in pending:
            for waiter in group.waiters if group is not None else ():
                if not waiter.done():
                    waiter.set_exception(
                        EngineUnavailable("not stored: the journal cannot be written")
                    )

    def _compact_tick(self) -> None:
        assert self._loop is not None
        self._compact_timer = self._loop.call_later(self._compact_every_s, self._compact_tick)
        self._compact_due = True
        self._pump()

    # -- writer thread ---------------------------------------------------------------

    def _write(self, rows: _Rows) -> bool:
        """One group in one transaction: one fsync of the WAL at its commit."""
        upserts, deletes, messages = rows
        db = self._db
        assert db is not None
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
        return False

    def _compact_step(self, forgotten: array[int], horizon: int, now: float) -> bool:
        """Delete up to `_COMPACT_ROWS` messages past their age (first raising each of
        their channels' `dropped_through`, so a restart still reports the gap), the
        forgotten ones, and expired channels. True if more messages are past their age."""
        db = self._db
        assert db is not None
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
                (horizon, _COMPACT_ROWS),
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
        more = len(aged) == _COMPACT_ROWS
        if not more:
            _give_back_free_pages(db)
        return more

    # -- the lock --------------------------------------------------------------------

    def _lock(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise EngineUnavailable(
                f"cannot use the data directory {self.directory}: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise EngineUnavailable(
                f"the data directory {self.directory} is in use by another pushup "
                f"server{who}; give each server its own --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None


def _rows(group: _Group) -> _Rows:
    """The group's rows, read from the live channels now, on the loop thread: a
    channel changed several times in one group is written once, as it ends up."""
    upserts: list[tuple[Any, ...]] = []
    deletes: list[tuple[int]] = []
    for channel in group.channels.values():
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
    return upserts, deletes, group.messages


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


def _connect(path: Path) -> sqlite3.Connection:
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


def _read(db: sqlite3.Connection) -> Snapshot:
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


def _give_back_free_pages(db: sqlite3.Connection) -> None:
    """Shrink the file once a good part of it is free pages (after many deletions)."""
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    total = db.execute("PRAGMA page_count").fetchone()[0]
    if free >= 256 and free * 4 >= total:
        db.execute("PRAGMA incremental_vacuum")

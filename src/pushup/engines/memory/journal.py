"""Local persistence for the embedded engine: its changes, journaled in SQLite.

The memory engine stays the truth while it runs; the journal mirrors its channels and
cached messages so that a restarted server finds them again. Changes are committed in
groups: whatever was recorded in one turn of the event loop, or while the previous
group was being written, goes into one transaction on one background thread, so a
burst of publications costs one fsync, not one each. Callers wait for `durable()`, so
a change is acknowledged only once it is on disk.

A group that cannot be written (a full disk, an I/O error) is given up at once: its
callers get EngineUnavailable (StorageFull for a full disk), its publications were
never cached (`durability.py`), and its channels, whose truth is in memory, go with the
next group. New changes are refused until a write succeeds again, retried with backoff;
so every call is answered within about `_RETRY_MAX_S` plus one write.

The file and its statements are `sqlite.py`'s; the data directory is locked
(`lock.py`) for the journal's life, so two servers never share one; what was
acknowledged is also recorded beside it (`acked.py`), and compared with what the
journal holds at start (`recovery.py`).
"""

from __future__ import annotations

import asyncio
import copy
import errno
import logging
import math
import sqlite3
import time
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from pushup.core.errors import EngineUnavailable, StorageFull
from pushup.core.idempotency import Answer
from pushup.core.model import ChannelId, Message
from pushup.engines.memory import recovery, sqlite
from pushup.engines.memory.acked import AckFile, Acknowledged
from pushup.engines.memory.lock import DirectoryLock
from pushup.engines.memory.snapshot import ChannelState, Snapshot
from pushup.engines.memory.sqlite import COMPACT_ROWS

log = logging.getLogger("pushup.journal")

_FORGET_BATCH = 20_000  # forgotten ids that start a compaction before its time
_RETRY_MIN_S = 0.05
_RETRY_MAX_S = 2.0
_CLOSE_TIMEOUT_S = 10.0


@dataclass(slots=True, eq=False)
class _Group:
    """Changes collected for one transaction, and who waits for its commit."""

    channels: dict[ChannelId, ChannelState] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)
    # First answers to idempotency keys, committed with their publications.
    answers: list[Answer] = field(default_factory=list)
    # Run once committed (with True) before any waiter resumes, or once given up (with
    # False): the engine caches the publications, and tells its listener.
    after_commit: list[Callable[[bool], None]] = field(default_factory=list)
    # One future per caller: a caller cancelled (its client left) cancels only its own.
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    # What is acknowledged once this group is committed.
    acknowledged: Acknowledged = field(default_factory=Acknowledged)


class Journal:
    """The data directory of one embedded engine: a lock, an SQLite journal, and the
    record of what was acknowledged."""

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
        self._lock = DirectoryLock(self.directory)
        self._acks = AckFile(self.directory)
        # What the last committed group brought the record to.
        self._acknowledged = Acknowledged()
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
        # While writes fail: the error (new changes are refused), and the timer of the
        # next attempt. The outage is logged once, and its end once a group is written.
        self._failure: BaseException | None = None
        self._outage = False
        self._retry_s = 0.0
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    def open(self) -> Snapshot:
        """Lock the directory, open or create the journal, and read back what it holds
        (logging, in one line, what it could not). Raises EngineUnavailable (with a
        one-line reason) when it cannot."""
        self._loop = asyncio.get_running_loop()
        self._lock.acquire()
        try:
            self._db, snapshot, self._acknowledged = recovery.recover(
                self.directory, self._acks.open(), unreadable_record=self._acks.unreadable
            )
        except (sqlite3.Error, OSError) as exc:
            self._let_go()
            raise EngineUnavailable(f"cannot open the journal in {self.directory}: {exc}") from None
        except BaseException:
            self._let_go()
            raise
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="pushup-journal")
        # Start with a compaction: drop what expired while the server was down.
        self._compact_tick()
        return snapshot

    def _let_go(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._acks.close()
        self._lock.release()

    async def close(self) -> None:
        """Write what is still pending, then let go of the database and the lock."""
        if self._closed:
            return
        self._closed = True
        if self._compact_timer is not None:
            self._compact_timer.cancel()
        self._compact_due = False
        if self._retry is not None:
            # Writes fail: one last attempt now rather than after the backoff.
            self._retry.cancel()
            self._resume()
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
            sqlite.close(self._db)
            self._db = None
        self._acks.close()
        self._lock.release()

    # -- recording changes (loop thread) ---------------------------------------------

    def check(self) -> None:
        """Refuse a change while the journal cannot be written, before it is made."""
        if self._failure is not None:
            raise self._error(self._failure)

    def channel(self, channel: ChannelState) -> None:
        """Write this channel as it is when its group is committed (deleted if closed)."""
        self._group().channels[channel.id] = channel

    def messages(self, messages: Sequence[Message]) -> None:
        self._group().messages.extend(messages)

    def answer(self, answer: Answer) -> None:
        """Keep the first answer to an idempotency key, with the publication recorded
        just before it (in the same group, so in the same transaction)."""
        self._group().answers.append(answer)

    def forget(self, message_id: int) -> None:
        """No channel holds this message any more: delete it at the next compaction."""
        self._forgotten.append(message_id)
        if len(self._forgotten) >= _FORGET_BATCH and not self._compact_due:
            self._compact_due = True
            self._pump()

    def durable(self) -> asyncio.Future[None]:
        """A future of the caller's own, done once every change recorded so far is
        committed; it fails with EngineUnavailable if they cannot be written."""
        assert self._loop is not None
        waiter = self._loop.create_future()
        self._group().waiters.append(waiter)
        return waiter

    def group(self) -> object:
        """The group now collecting changes: the same object until it is written."""
        return self._group()

    def after_commit(self, callback: Callable[[bool], None]) -> None:
        """Run `callback(True)` once the group now collecting is committed, before any
        of its waiters resumes; `callback(False)` if it is given up."""
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
        group = self._collecting
        # While writes fail, only a group tells whether they work again.
        compact = self._compact_due and self._failure is None
        if compact and (group is None or self._compacting_turn):
            self._compact_due = False
            self._compacting_turn = False
            forgotten = self._forgotten[:COMPACT_ROWS]
            del self._forgotten[:COMPACT_ROWS]
            now = self._clock()
            # Expired in memory when `id / 1e6 + ttl <= now`; one µs of margin for floats.
            horizon = math.floor((now - self._message_ttl_s) * 1_000_000) - 1
            self._start(partial(self._compact_step, forgotten, horizon, now), None, forgotten)
        elif group is not None:
            self._collecting = None
            self._compacting_turn = True
            group.acknowledged = self._acknowledged_after(group)
            rows = sqlite.rows(group.channels.values(), group.messages, group.answers)
            self._start(partial(self._write, rows, group.acknowledged), group, None)
        else:
            self._idle.set()

    def _acknowledged_after(self, group: _Group) -> Acknowledged:
        """The record once `group` is committed (groups are written one at a time)."""
        acknowledged = self._acknowledged
        return Acknowledged(
            group.messages[-1].id if group.messages else acknowledged.message_id,
            max(acknowledged.channel_id, max(group.channels, default=0)),
            acknowledged.messages + len(group.messages),
        )

    def _start(
        self, job: Callable[[], bool], group: _Group | None, forgotten: array[int] | None
    ) -> None:
        assert self._loop is not None and self._writer is not None
        self._busy = True
        self._idle.clear()
        running = self._loop.run_in_executor(self._writer, job)
        running.add_done_callback(partial(self._finished, group, forgotten))

    def _finished(
        self, group: _Group | None, forgotten: array[int] | None, running: asyncio.Future[bool]
    ) -> None:
        self._busy = False
        exc = running.exception()
        if exc is not None:
            self._failed(group, forgotten, exc)
            return
        if group is None and forgotten is None:  # a probe
            self._failure = None
        elif group is not None:
            self._recovered()
            self._acknowledged = group.acknowledged
            for callback in group.after_commit:
                callback(True)
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

    def _recovered(self) -> None:
        if self._failure is not None:
            self._failure = None
            self._retry_s = 0.0
        if self._outage:
            self._outage = False
            log.warning("the journal in %s is written again", self.directory)

    def _failed(
        self, group: _Group | None, forgotten: array[int] | None, exc: BaseException
    ) -> None:
        """Give the group up: its callers get an error now, and its channels go with the
        next group. New changes are refused until a write succeeds; one is tried again
        after a growing delay."""
        assert self._loop is not None
        if not self._outage:
            self._outage = True
            self._log_failure(exc)
        self._failure = exc
        if forgotten is not None:
            self._forgotten[:0] = forgotten  # for the next compaction
            self._compact_due = True
        if group is not None:
            self._drop(group, self._error(exc))
            # Memory is the truth for channels: whatever they are then, they are written.
            pending = self._collecting
            if pending is None:
                pending = self._collecting = _Group()
            pending.channels = {**group.channels, **pending.channels}
        if self._closed:
            self._give_up()
            return
        self._retry_s = min(max(self._retry_s * 2, _RETRY_MIN_S), _RETRY_MAX_S)
        self._busy = True  # nothing starts before the retry
        self._retry = self._loop.call_later(self._retry_s, self._resume)

    def _resume(self) -> None:
        self._retry = None
        self._busy = False
        if self._collecting is None:
            # No group to try (a compaction failed): a write of its own tells.
            self._start(self._probe, None, None)
        else:
            self._pump()

    def _log_failure(self, exc: BaseException) -> None:
        """One line: a full disk or a failing file system is expected, not a bug."""
        if _is_full(exc):
            log.error(
                "the disk of the data directory %s is full: changes get 503 until there is "
                "space again",
                self.directory,
            )
        elif isinstance(exc, sqlite3.Error | OSError):
            log.error(
                "cannot write the journal in %s (%s): changes get 503 until it can be",
                self.directory,
                exc,
            )
        else:
            log.error(
                "cannot write the journal in %s; changes get 503 until it can be",
                self.directory,
                exc_info=exc,
            )

    def _error(self, exc: BaseException) -> EngineUnavailable:
        if _is_full(exc):
            return StorageFull(f"not stored: the disk of {self.directory} is full")
        return EngineUnavailable(f"not stored: cannot write the journal in {self.directory}: {exc}")

    def _give_up(self) -> None:
        """Stopping while writes fail: what is left is not written."""
        pending, self._collecting = self._collecting, None
        if pending is not None:
            self._drop(pending, self._error(self._failure or OSError("stopping")))
            failure = self._failure
            count = len(pending.channels)
            log.warning(
                "stopping with the latest changes to %d channel%s not written to the journal "
                "in %s (%s); the publications among them were answered 503",
                count,
                "" if count == 1 else "s",
                self.directory,
                "the disk is full" if failure is not None and _is_full(failure) else failure,
            )
        self._idle.set()

    def _abandon(self) -> None:
        """Stopping while a write hangs: answer the waiting callers with an error."""
        pending, self._collecting = self._collecting, None
        log.error("stopping with a write to the journal in %s unfinished", self.directory)
        if pending is not None:
            self._drop(pending, EngineUnavailable("not stored: the journal hangs"))

    @staticmethod
    def _drop(group: _Group, error: EngineUnavailable) -> None:
        """A group that will not be written: it counts for nothing, its callers learn."""
        for callback in group.after_commit:
            callback(False)
        for waiter in group.waiters:
            if not waiter.done():
                # One exception each: raising one object in several tasks chains them.
                waiter.set_exception(copy.copy(error))

    def _compact_tick(self) -> None:
        assert self._loop is not None
        self._compact_timer = self._loop.call_later(self._compact_every_s, self._compact_tick)
        self._compact_due = True
        self._pump()

    # -- writer thread ---------------------------------------------------------------

    def _write(self, rows: sqlite.Rows, acknowledged: Acknowledged) -> bool:
        """One group in one transaction, then the record of what it acknowledges;
        False: nothing more to do."""
        assert self._db is not None
        sqlite.write(self._db, rows, acknowledged.messages)
        try:
            self._acks.write(acknowledged)
        except OSError as exc:
            # Committed all the same: only the check of losses at the next start is
            # weaker. Said once (the writer thread alone reads and sets the flag).
            if not self._acks.failing:
                self._acks.failing = True
                log.warning("cannot update %s: %s", self._acks.path, exc)
        return False

    def _probe(self) -> bool:
        assert self._db is not None
        sqlite.keep_marks(self._db, {"messages": self._acknowledged.messages})
        return False

    def _compact_step(self, forgotten: array[int], horizon: int, now: float) -> bool:
        """One step of compaction; True if more messages are past their age."""
        assert self._db is not None
        return sqlite.compact_step(self._db, forgotten, horizon, now)


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)

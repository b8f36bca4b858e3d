"""Local persistence for the embedded engine: its changes, journaled in SQLite.

The memory engine stays the truth while it runs; the journal mirrors its channels and
cached messages so that a restarted server finds them again. Changes are committed in
groups: whatever was recorded in one turn of the event loop, or while the previous
group was being written, goes into one transaction on one background thread, so a
burst of publications costs one fsync, not one each. Callers wait for `durable()`, so
a change is acknowledged only once it is on disk.

The file and its statements are `sqlite.py`'s; the data directory is locked
(`lock.py`) for the journal's life, so two servers never share one.
"""

from __future__ import annotations

import asyncio
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

from pushup.core.errors import EngineUnavailable
from pushup.core.model import ChannelId, Message
from pushup.engines.memory import sqlite
from pushup.engines.memory.lock import DirectoryLock
from pushup.engines.memory.snapshot import ChannelState, Snapshot
from pushup.engines.memory.sqlite import COMPACT_ROWS, DATABASE

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
    # Run once committed, before any waiter resumes (the engine tells its listener).
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    # One future per caller: a caller cancelled (its client left) cancels only its own.
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


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
        self._lock = DirectoryLock(self.directory)
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
        self._lock.acquire()
        try:
            self._db = sqlite.connect(self.directory / DATABASE)
            snapshot = sqlite.read(self._db)
        except (sqlite3.Error, OSError) as exc:
            self._lock.release()
            raise EngineUnavailable(f"cannot open the journal in {self.directory}: {exc}") from None
        except BaseException:
            self._lock.release()
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
            sqlite.close(self._db)
            self._db = None
        self._lock.release()

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
            forgotten = self._forgotten[:COMPACT_ROWS]
            del self._forgotten[:COMPACT_ROWS]
            now = self._clock()
            # Expired in memory when `id / 1e6 + ttl <= now`; one µs of margin for floats.
            horizon = math.floor((now - self._message_ttl_s) * 1_000_000) - 1
            job = partial(self._compact_step, forgotten, horizon, now)
            group = None
        elif group is not None:
            self._collecting = None
            self._compacting_turn = True
            job = partial(self._write, sqlite.rows(group.channels.values(), group.messages))
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

    def _write(self, rows: sqlite.Rows) -> bool:
        """One group in one transaction; False: nothing more to do."""
        assert self._db is not None
        sqlite.write(self._db, rows)
        return False

    def _compact_step(self, forgotten: array[int], horizon: int, now: float) -> bool:
        """One step of compaction; True if more messages are past their age."""
        assert self._db is not None
        return sqlite.compact_step(self._db, forgotten, horizon, now)

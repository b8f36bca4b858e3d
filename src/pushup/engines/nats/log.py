"""The control entries as this node follows them: replayed once at start, then applied
entry by entry as they come, from an ordered consumer filtered on the control subjects
(nats-py resets it from the last stream sequence it delivered whenever a delivery or a
heartbeat goes missing). Publications are not in it: a node hears those only for the
channels it serves (`interest.py`).

`applied` is the stream sequence of the newest control entry this node has applied:
the writer decides a change only once it is at least the newest control entry under
the entry it appends on (`writer.py`), so no node decides on stale channels.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from pushup.core.errors import EngineUnavailable
from pushup.core.model import ChannelId
from pushup.engines.nats import records
from pushup.engines.nats.layout import Subjects
from pushup.engines.nats.records import Entry
from pushup.engines.nats.replica import Replica

log = logging.getLogger("pushup.nats")

# Seconds between the consumer's heartbeats; two missed ones reset it.
_HEARTBEAT_S = 1.0


class Log:
    """Applies the stream's entries to the replica, in order, each once."""

    __slots__ = (
        "_js",
        "_nc",
        "_order",
        "_reader",
        "_replica",
        "_stream",
        "_sub",
        "_subjects",
        "_waiters",
        "applied",
    )

    def __init__(
        self, nc: Client, js: JetStreamContext, stream: str, subjects: Subjects, replica: Replica
    ) -> None:
        self._nc = nc
        self._js = js
        self._stream = stream
        self._subjects = subjects
        self._replica = replica
        self.applied = 0
        self._sub: Subscription | None = None
        self._reader: asyncio.Task[None] | None = None
        # Callers waiting until `applied` reaches a sequence.
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def open(self, timeout_s: float) -> None:
        """Replay what the stream holds into the replica, then follow it."""
        sub = await self._js.subscribe(
            self._subjects.control,
            stream=self._stream,
            ordered_consumer=True,
            deliver_policy=api.DeliverPolicy.ALL,
            idle_heartbeat=_HEARTBEAT_S,
            pending_msgs_limit=-1,
            pending_bytes_limit=-1,
        )
        self._sub = sub
        entries: list[Entry] = []
        info = await sub.consumer_info()
        pending = info.num_pending or 0
        if info.delivered is not None:
            pending += info.delivered.consumer_seq or 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while pending:
            try:
                msg = await sub.next_msg(timeout=min(1.0, timeout_s))
            except NatsTimeoutError:
                # What was there when we looked may have aged out since.
                if await self.first_after(self.applied) is None:
                    break
                if loop.time() > deadline:
                    raise
                continue
            entry = self._decode(msg)
            if entry is not None:
                entries.append(entry)
            self.applied = msg.metadata.sequence.stream
            pending = msg.metadata.num_pending
        self._replica.restore(entries, 0)
        self._reader = asyncio.create_task(self._follow(sub), name="pushup-nats-log")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection may be gone already
                log.debug("could not unsubscribe from the log: %s", exc)
        for _, _, future in self._waiters:
            if not future.done():
                future.set_exception(EngineUnavailable("the engine is closed"))
        self._waiters.clear()

    def apply(self, seq: int, entry: Entry) -> list[ChannelId]:
        """Apply the entry at `seq` unless it already was; the channels it dropped."""
        if seq <= self.applied:
            return []
        result = self._replica.apply(entry)
        self._advance(seq)
        return result

    def adopt(self, seq: int) -> None:
        """Nothing between `applied` and `seq` exists any more (aged out, replaced)."""
        if seq > self.applied:
            self._advance(seq)

    async def wait(self, seq: int, timeout_s: float) -> bool:
        """Whether `applied` reached `seq` within the timeout."""
        if seq <= self.applied:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (seq, next(self._order), future))
        try:
            async with asyncio.timeout(timeout_s):
                await future
        except TimeoutError:
            return False
        return True

    async def sync(self, timeout_s: float) -> None:
        """Wait until this node has applied every control entry the stream held when
        asked, so what another node just wrote is seen here too."""
        try:
            msg = await self._js._jsm.get_msg(self._stream, subject=self._subjects.control)
        except NotFoundError:
            return
        except NatsTimeoutError as exc:
            raise EngineUnavailable(f"cannot read the NATS stream: {exc!r}") from exc
        await self.reach(int(msg.seq or 0), timeout_s)

    async def reach(self, last: int, timeout_s: float) -> None:
        """Wait until `applied` is at `last`, or adopt it if what lay between is gone."""
        if await self.wait(last, timeout_s):
            return
        first = await self.first_after(self.applied)
        if first is None or first > last:
            self.adopt(last)  # whatever lay between aged out or was replaced
        elif not await self.wait(last, timeout_s):
            raise EngineUnavailable(f"this node fell behind the NATS stream (at {first})")

    async def first_after(self, seq: int) -> int | None:
        """The sequence of the first control entry the stream holds after `seq`."""
        try:
            msg = await self._js._jsm.get_msg(
                self._stream, seq=seq + 1, subject=self._subjects.control, next=True
            )
        except NotFoundError:
            return None
        return int(msg.seq or 0)

    def _advance(self, seq: int) -> None:
        self.applied = seq
        waiters = self._waiters
        while waiters and waiters[0][0] <= seq:
            future = heapq.heappop(waiters)[2]
            if not future.done():
                future.set_result(None)

    def _decode(self, msg: Msg) -> Entry | None:
        try:
            return records.decode(self._subjects.kind(msg.subject), msg.data)
        except (ValueError, KeyError, TypeError):
            log.warning("skipped an undecodable entry on %s", msg.subject)
            return None

    async def _follow(self, sub: Subscription) -> None:
        while True:
            try:
                msg = await sub.next_msg(timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reading the NATS log failed (%s); trying again", exc)
                await asyncio.sleep(0.1)
                continue
            entry = self._decode(msg)
            seq = msg.metadata.sequence.stream
            if entry is None:
                self.adopt(seq)
                continue
            try:
                self.apply(seq, entry)
            except Exception:
                log.exception("failed to apply NATS log entry %d", seq)
                self.adopt(seq)

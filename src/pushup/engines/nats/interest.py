"""The channels this node serves, and their publications: a node hears a channel's
publications only while it has polls or streams on it (and a grace period after, so a
client that polls again does not make it churn).

Serving a channel is subscribing first, then reading: a core NATS subscription on the
channel's `live` subject (where the stream republishes each copy once stored), then its
history from the stream (a batched direct get on the channel's subject), then the copies
heard meanwhile, merged by stream sequence. Nothing falls between the read and the
subscription: a copy stored before the subscription is in the history, one stored
after is heard, one stored in between is in both and cached once.

Copies are applied in stream order, which is id order, over all served channels: the
subscriptions' callbacks only queue them, and one flush at the end of the loop's turn
sorts them by sequence. Each copy names the sequence of its channel's previous copy
(`Nats-Last-Sequence`), so a copy lost on the way (a reconnection, a slow consumer) is
noticed by the next one: the feed is held while the channel's missing copies are
fetched, so no later id overtakes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import NotFoundError

from pushup.core.errors import EngineUnavailable
from pushup.core.model import ChannelId
from pushup.engines.nats import records
from pushup.engines.nats.layout import Subjects
from pushup.engines.nats.records import Copy
from pushup.engines.nats.replica import Replica
from pushup.engines.nats.writer import UNREACHABLE

log = logging.getLogger("pushup.nats")

# Copies asked for per direct get (the server also bounds a batch by bytes).
_BATCH = 256


class _Served:
    """One channel this node serves: its subscription, the sequence of its newest
    copy applied, and copies heard while its history is read."""

    __slots__ = ("buffer", "last_seq", "ready", "sub", "used_at")

    def __init__(self, used_at: float) -> None:
        self.sub: Subscription | None = None
        self.last_seq = 0
        self.buffer: list[Copy] | None = []  # None once the history is in
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.used_at = used_at


class Interest:
    """Subscribes to the channels this node's polls want, fetches their history, and
    feeds their copies, in order, to the replica."""

    __slots__ = (
        "_flushing",
        "_healing",
        "_nc",
        "_pending",
        "_replica",
        "_stream",
        "_subjects",
        "_timeout_s",
        "grace_s",
        "received",
        "served",
    )

    def __init__(
        self,
        nc: Client,
        stream: str,
        subjects: Subjects,
        replica: Replica,
        *,
        timeout_s: float,
        grace_s: float,
    ) -> None:
        self._nc = nc
        self._stream = stream
        self._subjects = subjects
        self._replica = replica
        self._timeout_s = timeout_s
        self.grace_s = grace_s
        self.served: dict[ChannelId, _Served] = {}
        self._pending: list[Copy] = []
        self._flushing = False
        self._healing: asyncio.Task[None] | None = None
        # Publication copies this node received, live or fetched.
        self.received = 0

    def serving(self, channel_id: ChannelId) -> bool:
        served = self.served.get(channel_id)
        return served is not None and served.buffer is None

    async def serve(self, channel_ids: Sequence[ChannelId]) -> None:
        """Make sure this node holds these channels' messages and hears new ones."""
        now = time.monotonic()
        for channel_id in channel_ids:
            served = self.served.get(channel_id)
            if served is None:
                served = self.served[channel_id] = _Served(now)
                await self._load(channel_id, served)
            else:
                served.used_at = now
                if not served.ready.done():
                    await asyncio.shield(served.ready)
                elif served.ready.exception() is not None:
                    del self.served[channel_id]
                    await self.serve([channel_id])

    async def _load(self, channel_id: ChannelId, served: _Served) -> None:
        try:
            served.sub = await self._nc.subscribe(
                self._subjects.live(channel_id),
                cb=self._on_live,
                pending_msgs_limit=-1,
                pending_bytes_limit=-1,
            )
            await self._nc.flush(timeout=max(1, round(self._timeout_s)))
            history = await self.fetch(channel_id, 0)
        except UNREACHABLE as exc:
            error = EngineUnavailable(f"cannot read a channel from NATS: {exc!r}")
            served.ready.set_exception(error)
            served.ready.exception()  # retrieved: the callers raise it themselves
            with contextlib.suppress(*UNREACHABLE):
                if served.sub is not None:
                    await served.sub.unsubscribe()
            raise error from exc
        heard, served.buffer = served.buffer or [], None
        served.last_seq = _last(history)
        self._replica.cache_copies(history, lambda cid: cid == channel_id, tell=False)
        # Heard while the history was read: new, so told (once: by id).
        later = [copy for copy in heard if copy.seq > served.last_seq]
        if later:
            served.last_seq = later[-1].seq
            self._replica.cache_copies(later, lambda cid: cid == channel_id, tell=True)
        served.ready.set_result(None)

    async def fetch(self, channel_id: ChannelId, after_seq: int) -> list[Copy]:
        """The channel's copies the stream holds after `after_seq`, in order."""
        subject = self._subjects.messages(channel_id)
        inbox = self._nc.new_inbox()
        answers: asyncio.Queue[Msg] = asyncio.Queue()

        async def on_answer(msg: Msg) -> None:
            answers.put_nowait(msg)

        copies: list[Copy] = []
        sub = await self._nc.subscribe(inbox, cb=on_answer)
        try:
            more = True
            while more:
                request = {"seq": after_seq + 1, "next_by_subj": subject, "batch": _BATCH}
                await self._nc.publish(
                    f"$JS.API.DIRECT.GET.{self._stream}", orjson.dumps(request), reply=inbox
                )
                while True:
                    async with asyncio.timeout(self._timeout_s):
                        msg = await answers.get()
                    headers = msg.headers or {}
                    status = headers.get("Status")
                    if status == "404":
                        more = False
                        break
                    if status == "204":  # the end of this batch
                        more = int(headers.get("Nats-Num-Pending") or 0) > 0
                        break
                    if status is not None:
                        raise EngineUnavailable(f"NATS refused a read: {status}")
                    copy = records.decode_copy(headers, msg.data, channel_id, previous_key="-")
                    copies.append(copy)
                    after_seq = copy.seq
        finally:
            with contextlib.suppress(*UNREACHABLE):
                await sub.unsubscribe()
        self.received += len(copies)
        return copies

    async def last_publication(self, channel_id: ChannelId) -> float | None:
        """When the channel's newest publication was made, if the stream holds one."""
        js = self._nc.jetstream(timeout=self._timeout_s)
        try:
            msg = await js._jsm.get_msg(
                self._stream, subject=self._subjects.messages(channel_id), direct=True
            )
        except NotFoundError:
            return None
        except UNREACHABLE as exc:
            raise EngineUnavailable(f"NATS is unreachable: {exc!r}") from exc
        return float((msg.headers or {})[records.NOW])

    # -- the live feed ---------------------------------------------------------------

    async def _on_live(self, msg: Msg) -> None:
        """Queue a copy; one flush per turn of the loop applies them all in order."""
        channel_id = ChannelId(int(msg.subject.rsplit(".", 1)[1]))
        try:
            copy = records.decode_copy(
                msg.headers or {}, msg.data, channel_id, previous_key="Nats-Last-Sequence"
            )
        except (KeyError, ValueError):
            log.warning("skipped an undecodable publication on %s", msg.subject)
            return
        self.received += 1
        self._pending.append(copy)
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Apply the queued copies in stream order (held while copies are fetched)."""
        self._flushing = False
        if self._healing is not None or not self._pending:
            return
        pending = sorted(self._pending, key=lambda copy: copy.seq)
        self._pending = []
        ready: list[Copy] = []
        for n, copy in enumerate(pending):
            served = self.served.get(copy.channel_id)
            if served is None:
                continue
            if served.buffer is not None:
                served.buffer.append(copy)
                continue
            if copy.seq <= served.last_seq:
                continue
            if copy.previous > served.last_seq:
                # A copy of this channel went missing: fetch it before going on.
                self._pending = pending[n:] + self._pending
                self._healing = asyncio.create_task(self._heal([copy.channel_id]))
                break
            served.last_seq = copy.seq
            ready.append(copy)
        if ready:
            self._replica.cache_copies(ready, self.serving, tell=True)

    def heal_all(self) -> None:
        """The connection came back: copies may have been lost meanwhile."""
        if self._healing is None:
            self._healing = asyncio.create_task(self._heal(list(self.served)))

    async def _heal(self, channel_ids: list[ChannelId]) -> None:
        try:
            for channel_id in channel_ids:
                while True:
                    served = self.served.get(channel_id)
                    if served is None or served.buffer is not None:
                        break
                    try:
                        copies = await self.fetch(channel_id, served.last_seq)
                    except (*UNREACHABLE, EngineUnavailable) as exc:
                        log.warning("cannot fetch missed publications (%s); trying again", exc)
                        await asyncio.sleep(0.5)
                        continue
                    if copies:
                        served.last_seq = copies[-1].seq
                        self._replica.cache_copies(copies, self.serving, tell=True)
                    break
        finally:
            self._healing = None
            self.flush()

    # -- letting go ------------------------------------------------------------------

    async def release_idle(self, parked: Callable[[ChannelId], int]) -> None:
        """Stop serving channels without polls for the grace period, or gone."""
        horizon = time.monotonic() - self.grace_s
        channels = self._replica.cache.channels
        for channel_id, served in list(self.served.items()):
            if not served.ready.done():
                continue
            gone = channel_id not in channels
            if gone or (served.used_at < horizon and parked(channel_id) == 0):
                del self.served[channel_id]
                if not gone:
                    self._replica.forget_messages(channel_id)
                if served.sub is not None:
                    with contextlib.suppress(*UNREACHABLE):
                        await served.sub.unsubscribe()

    def touch(self, channel_ids: Sequence[ChannelId]) -> None:
        now = time.monotonic()
        for channel_id in channel_ids:
            served = self.served.get(channel_id)
            if served is not None:
                served.used_at = now


def _last(copies: Sequence[Copy]) -> int:
    return copies[-1].seq if copies else 0

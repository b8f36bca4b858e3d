"""The live nodes, by their heartbeats on a core NATS subject, and subscriber counts and
presence gathered from them: each node holds its own parked polls, so a channel's
subscribers are counted by asking every live node (outside the stream: nothing here is
kept). One count may name several channels (`<asker> <id>,<id>...`, answered
`<n>,<n>...`); a presence names one (`<asker> <id> P`, answered with a JSON object)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from pushup.core import presence
from pushup.core.engine import EngineListener, SubscriberCount
from pushup.core.model import ChannelId
from pushup.engines.nats.layout import Subjects
from pushup.engines.nats.writer import UNREACHABLE

log = logging.getLogger("pushup.nats")

# Heartbeats a node may miss before it counts as gone.
_MISSED_BEATS = 3


class Nodes:
    """Beats for this node, hears the others', and answers and asks for counts."""

    __slots__ = (
        "_beat",
        "_beating",
        "_count",
        "_heartbeat_s",
        "_listener",
        "_nc",
        "_seen",
        "_subs",
        "_timeout_s",
        "node_id",
    )

    def __init__(
        self, node_id: str, subjects: Subjects, *, heartbeat_s: float, timeout_s: float
    ) -> None:
        self.node_id = node_id
        # Core subjects, outside the stream's `<root>.>`.
        self._beat = f"_{subjects.root}.node.beat"
        self._count = f"_{subjects.root}.node.count"
        self._heartbeat_s = heartbeat_s
        self._timeout_s = timeout_s
        self._seen: dict[str, float] = {}
        self._nc: Client | None = None
        self._listener: EngineListener | None = None
        self._subs: list[Subscription] = []
        self._beating: asyncio.Task[None] | None = None

    @property
    def live_nodes(self) -> int:
        """This node and every other one heard from lately."""
        horizon = time.monotonic() - self._heartbeat_s * _MISSED_BEATS
        return 1 + sum(1 for at in self._seen.values() if at >= horizon)

    async def start(self, nc: Client, listener: EngineListener) -> None:
        self._nc = nc
        self._listener = listener
        self._subs = [
            await nc.subscribe(self._beat, cb=self._on_beat),
            await nc.subscribe(self._count, cb=self._on_question),
        ]
        await nc.publish(self._beat, self.node_id.encode())
        # The others answer a newcomer's first beat with theirs.
        await nc.flush(timeout=2)
        self._beating = asyncio.create_task(self._beat_forever(), name="pushup-nats-beat")

    async def stop(self) -> None:
        if self._beating is not None:
            self._beating.cancel()
            await asyncio.gather(self._beating, return_exceptions=True)
            self._beating = None
        for sub in self._subs:
            with contextlib.suppress(*UNREACHABLE):
                await sub.unsubscribe()
        self._subs = []
        if self._nc is not None:
            # Leave at once rather than be counted as live until the beats are missed.
            with contextlib.suppress(*UNREACHABLE):
                await self._nc.publish(self._beat, b"-" + self.node_id.encode())
                await self._nc.flush(timeout=1)

    async def count(self, channel_id: ChannelId) -> SubscriberCount:
        """This node's count plus each live node's that answers within the timeout."""
        (count,) = await self.count_each([channel_id])
        return count

    async def count_each(self, channel_ids: Sequence[ChannelId]) -> list[SubscriberCount]:
        """The same for several channels, in one question."""
        assert self._listener is not None
        local = [self._listener.subscribers(channel_id) for channel_id in channel_ids]
        live = self.live_nodes
        wanted = ",".join(map(str, channel_ids))
        totals, counted = list(local), 1
        for answer in await self._ask(f"{self.node_id} {wanted}", live):
            try:
                counts = [int(n) for n in answer.split(b",")]
            except ValueError:
                counts = []
            if len(counts) == len(totals):  # else a node that misread it
                totals = [t + n for t, n in zip(totals, counts, strict=True)]
                counted += 1
        return [
            SubscriberCount(total, own, live, counted)
            for total, own in zip(totals, local, strict=True)
        ]

    async def presence(self, channel_id: ChannelId) -> presence.Presence:
        """This node's presence merged with each live node's that answers in time."""
        assert self._listener is not None
        parts = [self._listener.presence(channel_id)]
        live = self.live_nodes
        for answer in await self._ask(f"{self.node_id} {channel_id} P", live):
            try:
                parts.append(presence.from_wire(orjson.loads(answer)))
            except ValueError as exc:  # orjson's decode error is one too
                log.warning("ignored a malformed presence from another node: %s", exc)
        return presence.merge(parts, live_nodes=live, counted_nodes=len(parts))

    async def _ask(self, question: str, live: int) -> list[bytes]:
        """The other nodes' answers to a question, as many as come within the timeout."""
        if live == 1:
            return []
        assert self._nc is not None
        nc = self._nc
        got: list[bytes] = []
        inbox = nc.new_inbox()
        answers: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_answer(msg: Msg) -> None:
            answers.put_nowait(msg.data)

        try:
            sub = await nc.subscribe(inbox, cb=on_answer)
            try:
                await nc.publish(self._count, question.encode(), inbox)
                async with asyncio.timeout(self._timeout_s):
                    while 1 + len(got) < live:
                        got.append(await answers.get())
            except TimeoutError:
                pass
            finally:
                with contextlib.suppress(*UNREACHABLE):
                    await sub.unsubscribe()
        except UNREACHABLE as exc:
            log.debug("could not ask the other nodes: %r", exc)
        return got

    async def _on_beat(self, msg: Msg) -> None:
        node = msg.data.decode()
        if node.startswith("-"):
            self._seen.pop(node[1:], None)
        elif node != self.node_id:
            new = node not in self._seen
            self._seen[node] = time.monotonic()
            if new and self._nc is not None:
                # A newcomer learns of this node now, not a heartbeat later.
                with contextlib.suppress(*UNREACHABLE):
                    await self._nc.publish(self._beat, self.node_id.encode())

    async def _on_question(self, msg: Msg) -> None:
        """Another node counts channels' subscribers, or asks who is on one (`P`)."""
        asker, _, rest = msg.data.decode().partition(" ")
        if asker == self.node_id or not msg.reply or self._listener is None:
            return
        channels, _, kind = rest.partition(" ")
        try:
            channel_ids = [ChannelId(int(c)) for c in channels.split(",")]
        except ValueError:
            log.warning("ignored a malformed question from another node: %r", msg.data[:200])
            return
        if kind == "P":
            answer = orjson.dumps(self._listener.presence(channel_ids[0]).wire())
        else:
            counts = map(self._listener.subscribers, channel_ids)
            answer = ",".join(map(str, counts)).encode()
        with contextlib.suppress(*UNREACHABLE):
            await msg.respond(answer)

    async def _beat_forever(self) -> None:
        assert self._nc is not None
        while True:
            await asyncio.sleep(self._heartbeat_s)
            with contextlib.suppress(*UNREACHABLE):
                await self._nc.publish(self._beat, self.node_id.encode())
            horizon = time.monotonic() - self._heartbeat_s * _MISSED_BEATS
            for node in [n for n, at in self._seen.items() if at < horizon]:
                del self._seen[node]

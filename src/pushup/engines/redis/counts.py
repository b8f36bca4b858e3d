"""Subscriber counts and presence over every node: each node holds its own parked polls,
so a node counting a channel's subscribers (or asking who is on it) asks every node on a
control channel, and each answers with its own figures on the asker's reply channel. A
count may name several channels (a page of a listing): `Q <question> <id>,<id>...
<asker>`, answered with as many counts in the same order; a presence names one
(`P <question> <id> <asker>`), answered with a JSON object."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from pushup.core import presence
from pushup.core.engine import EngineListener, SubscriberCount
from pushup.core.errors import EngineUnavailable
from pushup.core.model import ChannelId
from pushup.engines.redis.events import EventStream
from pushup.engines.redis.health import Health
from pushup.engines.redis.keys import Keys
from pushup.engines.redis.nodes import Membership
from pushup.engines.redis.scripts import UNREACHABLE, Scripts
from pushup.engines.redis.tasks import need_task, stop

log = logging.getLogger("pushup.redis")


class _Tally:
    """The answers to one question of this node's: node id -> its answer (a subscriber
    count, or a presence as JSON)."""

    __slots__ = ("answers", "complete", "expected", "listeners")

    def __init__(self, complete: asyncio.Future[None]) -> None:
        self.answers: dict[str, str] = {}
        self.complete = complete
        self.expected: set[str] | None = None  # the other live nodes, once known
        self.listeners = 0  # the other nodes that heard the question

    def expect(self, expected: set[str], listeners: int) -> None:
        self.expected, self.listeners = expected, listeners
        self._check()

    def add(self, node: str, answer: str) -> None:
        self.answers[node] = answer
        self._check()

    def _check(self) -> None:
        # Done once every live node answered, or everyone who heard the question did
        # (a node killed a moment ago is still live by its heartbeat, but heard nothing).
        if self.expected is None or self.complete.done():
            return
        if self.expected <= self.answers.keys() or len(self.answers) >= self.listeners:
            self.complete.set_result(None)


class Counting:
    """Asks the other nodes for their counts, and answers theirs."""

    __slots__ = (
        "_answering",
        "_events",
        "_health",
        "_keys",
        "_listener",
        "_membership",
        "_questions",
        "_redis",
        "_scripts",
        "_tallies",
        "_timeout_s",
    )

    def __init__(
        self,
        *,
        redis: Redis,
        scripts: Scripts,
        keys: Keys,
        membership: Membership,
        events: EventStream,
        health: Health,
        timeout_s: float,
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._keys = keys
        self._membership = membership
        self._events = events
        self._health = health
        self._timeout_s = timeout_s
        self._listener: EngineListener | None = None
        self._tallies: dict[int, _Tally] = {}
        self._questions = itertools.count(1)
        self._answering: set[asyncio.Task[None]] = set()

    @property
    def reply_channel(self) -> str:
        """Where the answers to this node's questions come."""
        return self._keys.reply_prefix + self._membership.node_id

    def begin(self, listener: EngineListener) -> None:
        self._listener = listener

    async def stop(self) -> None:
        for task in list(self._answering):
            await stop(task)

    async def count(self, channel_id: ChannelId) -> SubscriberCount:
        """This node's parked polls on a channel plus every other live node's: the
        question goes out on the control channel, and the answers are awaited for at
        most `count_timeout_s`. A node that does not answer in time (overloaded, or
        killed within the last few heartbeats) is left out, and said to be:
        `counted_nodes` is then below `live_nodes`, and the total a lower bound."""
        (count,) = await self.count_each([channel_id])
        return count

    async def count_each(self, channel_ids: Sequence[ChannelId]) -> list[SubscriberCount]:
        """The same for several channels, in one question."""
        assert self._listener is not None
        await need_task()  # before the local count: asyncio.timeout below needs a Task
        local = [self._listener.subscribers(channel_id) for channel_id in channel_ids]
        answers, live = await self._ask("Q", ",".join(map(str, channel_ids)))
        totals, counted = list(local), 1
        for answer in answers.values():
            try:
                counts = [int(n) for n in answer.split(",")]
            except ValueError:
                counts = []
            # An answer of another length came from a node that could not read the
            # question: it is left out, as if it had not answered.
            if len(counts) == len(totals):
                totals = [t + n for t, n in zip(totals, counts, strict=True)]
                counted += 1
        return [
            SubscriberCount(total=total, local=own, live_nodes=live, counted_nodes=counted)
            for total, own in zip(totals, local, strict=True)
        ]

    async def presence(self, channel_id: ChannelId) -> presence.Presence:
        """This node's presence on a channel merged with every other live node's that
        answers in time, asked as `count` asks."""
        assert self._listener is not None
        await need_task()
        parts = [self._listener.presence(channel_id)]
        answers, live = await self._ask("P", str(channel_id))
        for node, answer in answers.items():
            try:
                parts.append(presence.from_wire(orjson.loads(answer)))
            except ValueError as exc:  # orjson's decode error is one too
                log.warning("ignored a malformed presence from node %s: %s", node, exc)
        return presence.merge(parts, live_nodes=live, counted_nodes=len(parts))

    async def _ask(self, kind: str, channels: str) -> tuple[dict[str, str], int]:
        """Ask every other node about channels (ids, comma-separated): their answers by
        node, and how many nodes are live (this one included)."""
        node_id = self._membership.node_id
        question = next(self._questions)
        tally = _Tally(asyncio.get_running_loop().create_future())
        self._tallies[question] = tally
        try:
            try:
                reply = await self._scripts.run_node(
                    "ask",
                    [self._keys.nodes],
                    [
                        self._keys.control,
                        self._membership.stale_s,
                        f"{kind} {question} {channels} {node_id}",
                    ],
                )
            except UNREACHABLE as exc:
                self._health.unreachable(exc)
                raise EngineUnavailable(f"Redis is unreachable: {exc}") from exc
            live = {raw.decode() for raw in reply[1:]} | {node_id}
            # The others that heard it: this node hears its own question too.
            tally.expect(live - {node_id}, int(reply[0]) - 1)
            # Without the event connection no answer can come.
            if self._events.live and not tally.complete.done():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._timeout_s):
                        await tally.complete
        finally:
            del self._tallies[question]
        answers = dict(tally.answers)
        return answers, len(live | answers.keys())

    def on_question(self, data: bytes) -> None:
        """Another node counts channels' subscribers (`Q`) or asks who is on one (`P`):
        answer with this node's figures."""
        assert self._listener is not None
        try:
            kind, question, channels, asker = data.decode().split(" ", 3)
            channel_ids = [ChannelId(int(c)) for c in channels.split(",")]
            if kind == "P":
                found = orjson.dumps(self._listener.presence(channel_ids[0]).wire()).decode()
            else:
                found = ",".join(str(self._listener.subscribers(c)) for c in channel_ids)
        except ValueError:
            log.warning("ignored a malformed question from another node: %r", data[:200])
            return
        node_id = self._membership.node_id
        if asker != node_id:
            # The presence last: its subs may hold spaces.
            text = f"R {question} {node_id} {found}" if kind == "P" else None
            self._spawn(self._answer(asker, text or f"A {question} {found} {node_id}"))

    def on_answer(self, data: bytes) -> None:
        try:
            kind, question, first, rest = data.decode().split(" ", 3)
            # `A question counts node`, or `R question node presence`.
            node, answer = (rest, first) if kind == "A" else (first, rest)
            tally = self._tallies.get(int(question))
            if tally is not None:  # else answered too late: the count is given already
                tally.add(node, answer)
        except ValueError:
            log.warning("ignored a malformed answer from another node: %r", data[:200])

    async def _answer(self, asker: str, text: str) -> None:
        try:
            await self._redis.publish(self._keys.reply_prefix + asker, text)
        except UNREACHABLE as exc:
            self._health.unreachable(exc)  # the asker counts without us, and says so

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(job)
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

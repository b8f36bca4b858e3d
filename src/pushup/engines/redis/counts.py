"""Subscriber counts over every node: each node holds its own parked polls, so a node
counting a channel's subscribers asks every node on a control channel, and each answers
with its own count on the asker's reply channel. One question may name several channels
(a page of a listing): `Q <question> <id>,<id>... <asker>`, answered with as many counts
in the same order."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

from redis.asyncio import Redis

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
    """The answers to one question of this node's: node id -> its subscriber counts."""

    __slots__ = ("answers", "complete", "expected", "listeners")

    def __init__(self, complete: asyncio.Future[None]) -> None:
        self.answers: dict[str, list[int]] = {}
        self.complete = complete
        self.expected: set[str] | None = None  # the other live nodes, once known
        self.listeners = 0  # the other nodes that heard the question

    def expect(self, expected: set[str], listeners: int) -> None:
        self.expected, self.listeners = expected, listeners
        self._check()

    def add(self, node: str, counts: list[int]) -> None:
        self.answers[node] = counts
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
        node_id = self._membership.node_id
        local = [self._listener.subscribers(channel_id) for channel_id in channel_ids]
        wanted = ",".join(map(str, channel_ids))
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
                        f"Q {question} {wanted} {node_id}",
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
        # An answer of another length came from a node that could not read the
        # question: it is left out, as if it had not answered.
        answers = {node: n for node, n in tally.answers.items() if len(n) == len(local)}
        live_nodes = len(live | answers.keys())
        return [
            SubscriberCount(
                total=own + sum(counts[i] for counts in answers.values()),
                local=own,
                live_nodes=live_nodes,
                counted_nodes=1 + len(answers),
            )
            for i, own in enumerate(local)
        ]

    def on_question(self, data: bytes) -> None:
        """Another node counts channels' subscribers: answer with this node's counts."""
        assert self._listener is not None
        try:
            _, question, channels, asker = data.decode().split(" ", 3)
            counts = [self._listener.subscribers(ChannelId(int(c))) for c in channels.split(",")]
        except ValueError:
            log.warning("ignored a malformed question from another node: %r", data[:200])
            return
        node_id = self._membership.node_id
        if asker != node_id:
            answer = ",".join(map(str, counts))
            self._spawn(self._answer(asker, f"A {question} {answer} {node_id}"))

    def on_answer(self, data: bytes) -> None:
        try:
            _, question, counts, node = data.decode().split(" ", 3)
            tally = self._tallies.get(int(question))
            if tally is not None:  # else answered too late: the count is given already
                tally.add(node, [int(count) for count in counts.split(",")])
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

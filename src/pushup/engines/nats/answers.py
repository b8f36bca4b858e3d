"""Idempotent publishing on the stream: the first answer to a key is an entry of its
own (`Subjects.answer`), stored in the same atomic batch as the copies it answers, and
kept for the key's window.

Before each append the node reads that subject's newest entry from the stream's
leader, and the append is conditional on the stream's last sequence as the node knew
it before the read (`Writer.append`'s `look`): no node's entry, that answer included,
can come between the read and the write, so the check and the store are one step over
every node, as a Redis script is. The stream's own deduplication (`Nats-Msg-Id`) is not
used: it answers a duplicate with the sequence of the first entry only, not the answer,
and its window is the stream's, not each node's `--idempotency-window`.

A batch too large for one atomic batch is stored in several, each carrying the answer
so far: a retry after a failure midway stores only the publications not yet stored.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from nats.aio.client import Client
from nats.js.errors import NotFoundError

from pushup.core import idempotency
from pushup.core.engine import Publication
from pushup.core.errors import EngineUnavailable, IdempotencyKeyReused
from pushup.core.idempotency import Answer, Entry, IdempotencyKey
from pushup.core.model import Message
from pushup.engines.nats import layout
from pushup.engines.nats import publications as publishing
from pushup.engines.nats.layout import Subjects
from pushup.engines.nats.replica import Replica
from pushup.engines.nats.writer import UNREACHABLE, Change, Look, Part

log = logging.getLogger("pushup.nats")

# Reads the newest entry on a subject from the stream's leader; None: there is none.
LastEntry = Callable[[str], Awaitable[bytes | None]]
# Appends the change `decide` gives after `look`, on top of the stream's last entry.
Write = Callable[[Callable[[int], Change | None], Look], Awaitable[Change | None]]
# What the node does once a chunk is stored: its messages and when.
Settle = Callable[[list[Message], float], None]


class Once:
    """One publication request under an idempotency key, chunk by chunk: `look` and
    `decide` for each append, `stored` after it, `answered` at the end."""

    __slots__ = (
        "_clock",
        "_found",
        "_kept",
        "_key",
        "_last_entry",
        "_message_ttl_s",
        "_publications",
        "_replica",
        "_stored",
        "_subject",
        "_subjects",
        "done",
    )

    def __init__(
        self,
        publications: Sequence[Publication],
        key: IdempotencyKey,
        last_entry: LastEntry,
        replica: Replica,
        subjects: Subjects,
        message_ttl_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._publications = publications
        self._key = key
        self._last_entry = last_entry
        self._replica = replica
        self._subjects = subjects
        self._subject = subjects.answer(key.digest)
        self._message_ttl_s = message_ttl_s
        self._clock = clock
        # The answer the last look found, and what it (or the last append) answers.
        self._found: Answer | None = None
        self._kept: tuple[Entry, ...] = ()
        # Messages this call stored.
        self._stored: list[Message] = []
        self.done = False

    async def look(self) -> None:
        """Read the key's answer; raise IdempotencyKeyReused if it answers another
        request."""
        raw = await self._last_entry(self._subject)
        found = None
        if raw is not None:
            try:
                found = idempotency.decode(raw)
            except ValueError:
                log.warning("an unreadable answer on %s is ignored", self._subject)
        # Its entry outlives the window by the margin every entry has.
        if found is not None and found.expires_at <= self._clock():
            found = None
        if found is not None and found.fingerprint != self._key.fingerprint:
            raise IdempotencyKeyReused(self._key.key)
        self._found = found

    def decide(self, last_id: int) -> Change | None:
        """The next chunk of publications not yet answered, with the answer so far;
        None once every publication is answered."""
        found, publications, key = self._found, self._publications, self._key
        self._kept = kept = () if found is None else found.entries
        if len(kept) >= len(publications):
            return None
        # The chunk's copies and the answer: within one atomic batch.
        chunk = publishing.chunks(publications[len(kept) :], publishing.MAX_BATCH_PARTS - 1)[0]
        change = publishing.decider(
            chunk, self._replica, self._subjects, self._message_ttl_s, self._clock
        )(last_id)
        messages, now = cast(tuple[list[Message], float], change.value)
        answer = Answer(
            key.digest, key.fingerprint, kept + idempotency.entries(messages), now + key.window_s
        )
        part = Part(self._subject, idempotency.encode(answer), ttl_s=layout.ttl(key.window_s))
        return Change((part, *change.parts), change.last_id, (messages, now, answer))

    async def run(self, write: Write, settle: Settle) -> tuple[list[Message], bool]:
        """Append chunk after chunk, each `write`n on top of the stream's last entry
        after a `look` (`Writer.append`) and `settle`d once stored, until every
        publication is answered; then `answered`."""
        while True:
            change = await write(self.decide, self.look)
            if change is None:
                return self.answered()
            settle(*self.stored(change))
            if self.done:
                return self.answered()

    def stored(self, change: Change) -> tuple[list[Message], float]:
        """A chunk was stored: its messages and when."""
        messages, now, answer = cast(tuple[list[Message], float, Answer], change.value)
        self._stored += messages
        self._kept = answer.entries
        self._found = answer
        self.done = len(answer.entries) == len(self._publications)
        return messages, now

    def answered(self) -> tuple[list[Message], bool]:
        """The messages of every publication, and whether none was stored by this call
        (the first answer, given again)."""
        if len(self._stored) == len(self._publications):
            return self._stored, False
        return idempotency.replay(self._publications, self._kept), not self._stored


async def last_entry(nc: Client, stream: str, timeout_s: float, subject: str) -> bytes | None:
    """The newest entry on a subject as the stream's leader has it (a direct get may be
    served by a replica that lags behind); None if there is none."""
    jsm = nc.jetstream(timeout=timeout_s)
    try:
        msg = await jsm._jsm.get_msg(stream, subject=subject, direct=False)
    except NotFoundError:
        return None
    except UNREACHABLE as exc:
        raise EngineUnavailable(f"NATS is unreachable: {exc!r}") from exc
    return msg.data or b""

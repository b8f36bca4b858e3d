"""Appending to the stream: one change at a time from this node, with
`Nats-Expected-Last-Sequence`, so the stream orders all changes of all nodes as Redis's
scripts do, and message ids grow in stream order.

A node no longer applies every entry (it hears only the publications of the channels
it serves), so it learns where the stream stands from the newest entry alone: every
entry carries the highest message id issued so far and the sequence of the newest
control entry before it (`records.LAST_ID`, `records.CONTROL`). While this node is the
only writer, its own acknowledgements keep it current and a publication costs one round
trip; when another node wrote in between, the append fails naming the last sequence,
the node reads that entry (one direct get), waits until it has applied the control
entries under it, decides again and appends again: three round trips.

A publication to several channels is one atomic batch (one copy per channel subject,
all or none, at consecutive sequences), so its copies share one id and no other entry
falls between them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from pushup.core.errors import EngineUnavailable
from pushup.engines.nats import records
from pushup.engines.nats.layout import Subjects
from pushup.engines.nats.log import Log

log = logging.getLogger("pushup.nats")

# Errors meaning "NATS is out of reach now": answered with 503.
UNREACHABLE = (nats.errors.Error, asyncio.TimeoutError, OSError)
_WRONG_LAST_SEQUENCE = 10071
_LAST_SEQUENCE = re.compile(r"(\d+)\s*$")
# Appends lost to other nodes' before giving up (each loss is another node's progress).
_MAX_TRIES = 100
# Reads from the stream what a decision depends on (see `Writer.append`).
Look = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Part:
    """One JetStream message of a change: its subject, body, headers and TTL."""

    subject: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    ttl_s: int | None = None
    # Control subjects keep their newest entry only.
    rollup: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    """What a decision writes (one part, or an atomic batch of several), the highest
    message id issued once it is stored, and what it stands for (handed back)."""

    parts: Sequence[Part]
    last_id: int
    value: object
    control: bool = False


def control(subject: str, entry: records.Entry, last_id: int, ttl_s: int | None = None) -> Change:
    """A control entry (a channel, a close, an expiry, a floor) as the change that writes
    it: a rollup, so its subject keeps only the newest."""
    part = Part(subject, records.encode(entry), ttl_s=ttl_s, rollup=True)
    return Change((part,), last_id, entry, control=True)


class Writer:
    """Appends one change at a time from this node, on top of the stream's last entry."""

    __slots__ = ("_js", "_lock", "_log", "_nc", "_stream", "_subjects", "_timeout_s", "seqs")

    def __init__(
        self, nc: Client, stream: str, subjects: Subjects, log: Log, timeout_s: float
    ) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream(timeout=timeout_s)
        self._stream = stream
        self._subjects = subjects
        self._log = log
        self._timeout_s = timeout_s
        self._lock = asyncio.Lock()
        # The stream's last sequence as this node knows it, the highest message id
        # issued up to it, and the newest control entry under it.
        self.seqs = (0, 0, 0)

    async def start(self) -> int:
        """Learn where the stream stands; the highest message id it tells of."""
        info = await self._js.stream_info(self._stream)
        await self._learn(int(info.state.last_seq or 0))
        return self.seqs[1]

    async def append(
        self, decide: Callable[[int], Change | None], look: Look | None = None
    ) -> tuple[Change, int] | None:
        """Decide (given the highest id issued so far; `decide` may raise, or give
        None: nothing to write), append, and hand back the change written with the
        stream sequence of its last part. Raises EngineUnavailable while NATS is out
        of reach, or when the write takes longer than the timeout.

        `look`, awaited before each decision, reads what the decision depends on from
        the stream: the append is conditional on the stream's last sequence as known
        before the look, so what it read still holds when the change is stored (if
        another entry came in between, the append fails, and it looks again)."""
        await need_task()
        try:
            # Appends go one at a time: the timeout covers the wait in line too, else
            # each caller would wait out every timeout before its own.
            async with asyncio.timeout(self._timeout_s):
                return await self._append(decide, look)
        except TimeoutError as exc:
            raise EngineUnavailable("NATS did not take the write in time") from exc

    async def _append(
        self, decide: Callable[[int], Change | None], look: Look | None
    ) -> tuple[Change, int] | None:
        async with self._lock:
            for _ in range(_MAX_TRIES):
                expected, last_id, control = self.seqs
                if look is not None:
                    await look()
                change = decide(last_id)
                if change is None:
                    return None
                if not self._nc.is_connected:
                    # nats-py would hold the write until it reconnects, and store it
                    # long after this caller was told 503.
                    raise EngineUnavailable("the connection to NATS is down; reconnecting")
                try:
                    seq = await self._publish(change, expected, last_id, control)
                except APIError as exc:
                    if exc.err_code != _WRONG_LAST_SEQUENCE:
                        raise EngineUnavailable(f"NATS refused a write: {exc}") from exc
                    match = _LAST_SEQUENCE.search(exc.description or "")
                    if match is None:
                        raise EngineUnavailable(f"NATS refused a write: {exc}") from exc
                    await self._learn(int(match.group(1)))
                    continue
                except UNREACHABLE as exc:
                    raise EngineUnavailable(f"NATS is unreachable: {exc!r}") from exc
                self.seqs = (seq, max(last_id, change.last_id), seq if change.control else control)
                return change, seq
            raise EngineUnavailable("too many concurrent writes to the NATS stream")

    async def _publish(self, change: Change, expected: int, last_id: int, control: int) -> int:
        common = {
            records.LAST_ID: str(max(last_id, change.last_id)),
            records.CONTROL: str(control),
        }
        parts = change.parts
        if len(parts) == 1:
            part = parts[0]
            headers = {**part.headers, **common, "Nats-Expected-Last-Sequence": str(expected)}
            if part.rollup:
                headers["Nats-Rollup"] = "sub"
            ack = await self._js.publish(
                part.subject,
                part.body,
                timeout=self._timeout_s,
                headers=headers,
                msg_ttl=part.ttl_s,
            )
            return int(ack.seq)
        batch = uuid.uuid4().hex
        for n, part in enumerate(parts, 1):
            headers = {
                **part.headers,
                **common,
                "Nats-Batch-Id": batch,
                "Nats-Batch-Sequence": str(n),
            }
            if n == 1:
                headers["Nats-Expected-Last-Sequence"] = str(expected)
            if part.ttl_s is not None:
                headers["Nats-TTL"] = str(part.ttl_s)
            if n < len(parts):
                await self._nc.publish(part.subject, part.body, headers=headers)
                continue
            headers["Nats-Batch-Commit"] = "1"
            ack = await self._js.publish(
                part.subject, part.body, timeout=self._timeout_s, headers=headers
            )
            return int(ack.seq)
        raise AssertionError("a change has at least one part")

    async def _learn(self, last: int) -> None:
        """Another node's entry is the stream's last: learn the highest id and the
        newest control entry from it, and apply control entries up to that one."""
        last_id, control = self.seqs[1], self._log.applied
        if last:
            try:
                msg = await self._js._jsm.get_msg(self._stream, seq=last, direct=True)
            except NotFoundError:
                # Aged out: the floor and this node's clock stand in for its id.
                await self._log.sync(self._timeout_s)
                control = self._log.applied
            except UNREACHABLE as exc:
                raise EngineUnavailable(f"NATS is unreachable: {exc!r}") from exc
            else:
                last_id = max(last_id, records.last_id(msg.headers))
                if self._subjects.kind(msg.subject or "") in ("message", "answer"):
                    control = records.control_seq(msg.headers)
                else:
                    control = last
        try:
            await self._log.reach(control, self._timeout_s)
        except UNREACHABLE as exc:
            raise EngineUnavailable(f"NATS is unreachable: {exc!r}") from exc
        self.seqs = (last, last_id, control)


async def need_task() -> None:
    """Make sure a Task runs the caller before it goes into nats-py, whose timeouts
    need one: the HTTP server steps handlers by hand until their first real wait
    (`pushup.http.eager`), and a bare yield is its signal to hand them to a Task."""
    if asyncio.current_task() is None:
        await asyncio.sleep(0)

"""What a start gets back of what the server had acknowledged, and what it could not,
said in one line at error level: rows the journal left out as damaged, acknowledged
changes it no longer holds (by the `acknowledged` record, `acked.py`), and a file
SQLite finds damaged, which is moved aside (kept for inspection) for an empty journal.

A start never refuses for a loss: a long-polling server's journal holds a cache of
recent messages, and clients recover from its loss (a gap, an unknown channel) as long
as the server is up. What must never happen is a silent loss, so it is always said.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from pushup.engines.memory import sqlite
from pushup.engines.memory.acked import ACKNOWLEDGED, Acknowledged
from pushup.engines.memory.snapshot import Snapshot
from pushup.engines.memory.sqlite import DATABASE

log = logging.getLogger("pushup.journal")


def recover(
    directory: Path, acknowledged: Acknowledged | None, *, unreadable_record: bool
) -> tuple[sqlite3.Connection, Snapshot, Acknowledged]:
    """Open the journal and read what it holds, its ids raised to everything
    acknowledged (never issued again, even those it lost); the record to go on from.
    Logs what is lost. Raises sqlite3.Error or OSError when it cannot."""
    path = directory / DATABASE
    why = f"{DATABASE} was missing or empty" if _empty(path) else None
    try:
        db, snapshot = _open(path)
    except sqlite.Damaged as exc:
        aside = path.with_name(f"{DATABASE}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
        for suffix in ("-wal", "-shm", ""):  # the file last: SQLite may not see it half
            if (part := path.with_name(path.name + suffix)).exists():
                part.rename(aside.with_name(aside.name + suffix))
        why = f"{DATABASE} is damaged ({exc}): it is moved aside to {aside.name}"
        db, snapshot = _open(path)
    try:
        going_on = _settle(db, directory, snapshot, acknowledged, why, unreadable_record)
    except BaseException:
        db.close()
        raise
    snapshot = dataclasses.replace(
        snapshot, last_message_id=going_on.message_id, last_channel_id=going_on.channel_id
    )
    return db, snapshot, going_on


def _empty(path: Path) -> bool:
    return not path.exists() or path.stat().st_size == 0


def _open(path: Path) -> tuple[sqlite3.Connection, Snapshot]:
    db = sqlite.connect(path)
    try:
        return db, sqlite.read(db)
    except BaseException:
        db.close()
        raise


def _settle(
    db: sqlite3.Connection,
    directory: Path,
    snapshot: Snapshot,
    acknowledged: Acknowledged | None,
    why: str | None,
    unreadable_record: bool,
) -> Acknowledged:
    """Say what is lost, once: damaged rows go, and the journal takes the marks of
    everything acknowledged. The record to go on from."""
    line = report(directory, snapshot, acknowledged, why=why, unreadable_record=unreadable_record)
    if line is not None:
        log.error(line)
    damaged = bool(snapshot.damaged_channels or snapshot.damaged_messages)
    if damaged:
        sqlite.drop_damaged(db, snapshot.damaged_channels, snapshot.damaged_messages)
    acknowledged = acknowledged or Acknowledged()
    going_on = Acknowledged(
        max(snapshot.last_message_id, acknowledged.message_id),
        max(snapshot.last_channel_id, acknowledged.channel_id),
        max(snapshot.committed_messages, acknowledged.messages),
    )
    if line is not None:
        sqlite.keep_marks(
            db,
            {
                "message_id": going_on.message_id,
                "channel_id": going_on.channel_id,
                "messages": going_on.messages,
            },
        )
    return going_on


def missing(acknowledged: Acknowledged | None, snapshot: Snapshot) -> int:
    """Acknowledged messages the journal holds no trace of (left out as damaged or not,
    they were committed after everything it holds)."""
    if acknowledged is None or acknowledged.message_id <= snapshot.last_message_id:
        return 0
    return max(0, acknowledged.messages - snapshot.committed_messages)


def channels_missing(acknowledged: Acknowledged | None, snapshot: Snapshot) -> bool:
    """Whether channels were acknowledged after the newest the journal holds (a channel
    left out as damaged, with a plausible id, is accounted for)."""
    if acknowledged is None:
        return False
    damaged = (i for i in snapshot.damaged_channels if i <= acknowledged.channel_id)
    return acknowledged.channel_id > max(snapshot.last_channel_id, *damaged, 0)


def report(
    directory: Path,
    snapshot: Snapshot,
    acknowledged: Acknowledged | None,
    *,
    why: str | None = None,
    unreadable_record: bool = False,
) -> str | None:
    """The line to log about what is lost, or None if nothing is. `why`: how the
    journal came to start empty, if it did."""
    parts: list[str] = []
    if acknowledged is not None:
        parts += _missing(acknowledged, snapshot, why)
    if why is not None and not parts and "damaged" in why:
        parts.append(f"it starts empty ({why})")
    damaged = len(snapshot.damaged_messages), len(snapshot.damaged_channels)
    if any(damaged):
        what = [
            _count(n, noun) for n, noun in zip(damaged, ("message", "channel"), strict=True) if n
        ]
        parts.append(
            f"{' and '.join(what)} damaged on disk (checksum or decoding failed): left out, "
            "never served"
        )
    if unreadable_record:
        parts.append(
            f"its record of what was acknowledged ({ACKNOWLEDGED}) is damaged: whether "
            "acknowledged changes are missing cannot be told this time"
        )
    if not parts:
        return None
    return f"the journal in {directory} did not get everything back: " + "; ".join(parts)


def _missing(acknowledged: Acknowledged, snapshot: Snapshot, why: str | None) -> list[str]:
    """What the record says was acknowledged and the journal no longer holds."""
    lost = missing(acknowledged, snapshot)
    channels_lost = channels_missing(acknowledged, snapshot)
    if not (lost or channels_lost):
        return []
    why = why or (
        f"{DATABASE}-wal was lost, cut short or damaged, or an older copy of the journal "
        "was put back"
    )
    if not (snapshot.last_message_id or snapshot.last_channel_id):
        return [
            f"it holds nothing, though the server acknowledged {_count(lost, 'message')} up "
            f"to id {acknowledged.message_id} ({_when(acknowledged.message_id)}) and channels "
            f"up to id {acknowledged.channel_id}: every channel and message is gone ({why})"
        ]
    parts = []
    if lost:
        parts.append(
            f"{_count(lost, 'acknowledged message')} up to id {acknowledged.message_id} "
            f"({_when(acknowledged.message_id)}) are missing: it ends at id "
            f"{snapshot.last_message_id} ({_when(snapshot.last_message_id)})"
        )
    if channels_lost:
        parts.append(
            f"channels acknowledged after id {snapshot.last_channel_id} up to id "
            f"{acknowledged.channel_id} are missing"
        )
    parts[-1] += f" ({why})"
    return parts


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _when(message_id: int) -> str:
    moment = datetime.fromtimestamp(message_id / 1_000_000, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")

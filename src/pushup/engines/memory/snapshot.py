"""What the journal exchanges with the engine: the live state of a channel it writes,
and everything it holds, read back at start."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from pushup.core.idempotency import Answer
from pushup.core.model import SERVER_RETENTION, ChannelId, MessageId, Retention


class ChannelState(Protocol):
    """What the journal reads of a live channel when it writes it."""

    @property
    def id(self) -> ChannelId: ...
    @property
    def name(self) -> str | None: ...
    @property
    def ttl_s(self) -> float: ...

    # Set by a publication before its commit: its row keeps the channel alive as long.
    expires_at: float

    @property
    def last_message_id(self) -> MessageId | None: ...
    @property
    def dropped_through(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    @property
    def retention(self) -> Retention: ...
    @property
    def owner(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class StoredChannel:
    """A channel as the journal last wrote it."""

    id: ChannelId
    name: str | None
    ttl_s: float
    expires_at: float
    last_message_id: MessageId | None
    dropped_through: int
    retention: Retention = SERVER_RETENTION
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: MessageId
    channels: tuple[ChannelId, ...]
    data: bytes


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the journal holds, in id order; expired entries included (the
    engine decides what expired while it was down). Damaged rows are left out and
    counted."""

    channels: list[StoredChannel]
    messages: list[StoredMessage]
    # Every id issued before is at or below these, even when its row is gone.
    last_channel_id: int
    last_message_id: int
    # The ids of rows that failed their checksum or did not decode.
    damaged_channels: list[int] = field(default_factory=list)
    damaged_messages: list[int] = field(default_factory=list)
    # Messages ever committed to this journal (its own count, beside `acknowledged`).
    committed_messages: int = 0
    # First answers to idempotency keys, expired ones included.
    answers: list[Answer] = field(default_factory=list)


# What there is to restore without a journal.
EMPTY = Snapshot([], [], 0, 0)

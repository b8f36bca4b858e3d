"""The nouns shared by every layer: channels, messages, poll outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NewType

import orjson

ChannelId = NewType("ChannelId", int)
MessageId = NewType("MessageId", int)

# A channel as a client names it: its integer id or its unique name.
ChannelRef = int | str

# Ids and cursors stay below 2**53 so JavaScript clients read them exactly.
MAX_ID = 2**53 - 1


class Message:
    """One publication: stored once, referenced from every channel it went to."""

    __slots__ = ("_fragment", "channels", "data", "id", "time")

    def __init__(
        self, id: MessageId, time: float, channels: tuple[ChannelId, ...], data: bytes
    ) -> None:
        self.id = id
        self.time = time
        self.channels = channels
        self.data = data  # the payload, already encoded as JSON
        self._fragment: bytes | None = None

    def fragment(self, channels: tuple[ChannelId, ...]) -> bytes:
        """This message as a JSON object listing `channels` (cached for the full list)."""
        if channels == self.channels:
            if self._fragment is None:
                self._fragment = _encode_message(self, channels)
            return self._fragment
        return _encode_message(self, channels)

    def __repr__(self) -> str:
        return f"Message(id={self.id}, channels={self.channels})"


def _encode_message(message: Message, channels: tuple[ChannelId, ...]) -> bytes:
    ids = ",".join(map(str, channels))
    return (
        f'{{"id":"{message.id}","time":{message.time!r},"channels":[{ids}],"data":'.encode()
        + message.data
        + b"}"
    )


# A message as one subscription sees it: with the subscribed channels it went to.
Hit = tuple[Message, tuple[ChannelId, ...]]


@dataclass(frozen=True, slots=True)
class Retention:
    """How long and how many of its messages one channel keeps, when it asked for less
    than the server's `--message-ttl` and `--max-messages` (None: the server's)."""

    message_ttl_s: float | None = None
    max_messages: int | None = None

    def keep_s(self, server_ttl_s: float) -> float:
        """Seconds a message stays: the channel's, never above the server's (which may
        have been lowered since the channel was made)."""
        own = self.message_ttl_s
        return server_ttl_s if own is None else min(own, server_ttl_s)

    def cap(self, server_max: int) -> int:
        """Messages cached at most, never above the server's."""
        own = self.max_messages
        return server_max if own is None else min(own, server_max)


SERVER_RETENTION = Retention()


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """A live channel's public state."""

    id: ChannelId
    name: str | None
    expires_at: float
    ttl_s: float
    messages: int
    last_message_id: MessageId | None
    retention: Retention = SERVER_RETENTION
    # The name of the publisher key that created it (`--publisher-keys`); None when made
    # without a key. An unnamed channel belongs to this key alone.
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelPage:
    """One page of a channel listing, and where the next one starts (None: the last).
    Without a prefix channels come by id and `next` is the last id; with one, by name
    and `next` is the last name."""

    channels: list[ChannelInfo]
    next: ChannelRef | None


@dataclass(frozen=True, slots=True)
class ChannelEnd:
    """A channel closed or expired, as the node whose operation removed it tells it."""

    id: ChannelId
    name: str | None
    reason: Literal["closed", "expired"]
    at: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class ReadResult:
    """What a store read found: the hits in publication order, and whether some were lost."""

    hits: list[Hit]
    gap: bool
    # Every message published after the read has an id above this.
    high_water: MessageId


class Outcome:
    """A finished answer to a poll, shared by every subscription that gets the same one.

    `framed` is a memo each transport fills with its own framing of this outcome, keyed
    by transport (a poll's connection mode, `"sse"`, `"ws"`), so a fan-out to thousands
    of receivers builds the bytes on the wire once per transport.
    """

    __slots__ = ("body", "framed", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body
        self.framed: dict[object, bytes] = {}


class PollOutcome(Outcome):
    """A 200 answer to a poll: messages, cursor and gap flag."""

    __slots__ = ("cursor", "gap", "hits", "more")

    def __init__(
        self, hits: list[Hit], cursor: MessageId, gap: bool, more: bool | None = None
    ) -> None:
        self.hits = hits
        self.cursor = cursor
        self.gap = gap
        # Whether a paged poll (`limit`) left messages for the next page; None for others,
        # whose answers do not carry the field.
        self.more = more
        parts = b",".join(message.fragment(channels) for message, channels in hits)
        body = b'{"messages":[%s],"cursor":"%d","gap":%s%s}' % (
            parts,
            cursor,
            b"true" if gap else b"false",
            b"" if more is None else (b',"more":true' if more else b',"more":false'),
        )
        super().__init__(200, body)


def paged_outcome(result: ReadResult, last: int = 0, limit: int = 0, floor: int = 0) -> PollOutcome:
    """A read's answer: its hits (within the history controls), with the cursor after
    the last one returned (or the high water, or `floor` if higher)."""
    hits, more = window(result.hits, last, limit)
    cursor = hits[-1][0].id if hits else MessageId(max(result.high_water, floor))
    return PollOutcome(hits, cursor, result.gap, more)


def window(hits: list[Hit], last: int, limit: int) -> tuple[list[Hit], bool | None]:
    """The `last` newest hits, or the `limit` oldest and whether more are left (None:
    the poll did not page, and its answer says nothing of more)."""
    if last and len(hits) > last:
        return hits[-last:], None
    if limit:
        return (hits[:limit], True) if len(hits) > limit else (hits, False)
    return hits, None


def closed_outcome(channel_ids: tuple[ChannelId, ...]) -> Outcome:
    """The 410 answer of a poll whose channels (these of them) closed or expired."""
    body = orjson.dumps(
        {
            "error": "channel_closed",
            "detail": "a subscribed channel was closed or expired",
            "channels": list(channel_ids),
        }
    )
    return Outcome(410, body)

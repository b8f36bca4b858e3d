"""What travels in the stream's JetStream messages: the control entries every node
applies (a JSON body), and the per-channel copies of a publication (the payload as it
came, its id, channels and time in headers), with the headers every entry carries so
that the newest entry alone tells a writer where the stream stands."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from pushup.core.model import (
    SERVER_RETENTION,
    ChannelId,
    ChannelInfo,
    Message,
    MessageId,
    Retention,
)

# Every entry: the highest message id issued up to and including it, and the stream
# sequence of the newest control entry before it (`writer.py` appends on top of both).
LAST_ID = "Pushup-Last-Id"
CONTROL = "Pushup-Control"
# A publication's copy on one channel's subject.
ID = "Pushup-Id"
CHANNELS = "Pushup-Channels"
NOW = "Pushup-Now"


@dataclass(frozen=True, slots=True)
class Floor:
    """Ids issued from now on are above these (a node started at this time)."""

    message_id: int
    channel_id: int


@dataclass(frozen=True, slots=True)
class ChannelRecord:
    """A channel as created or last renewed; publications since then extend it too."""

    id: ChannelId
    name: str | None
    ttl_s: float
    expires_at: float
    last_message_id: MessageId | None
    dropped_through: int
    # Its own message TTL and count, and the publisher key that created it: every
    # record of the channel (a renewal too) repeats them, as the newest replaces the
    # others (a rollup).
    retention: Retention = SERVER_RETENTION
    owner: str | None = None

    def info(self) -> ChannelInfo:
        """The channel as this record has it; its messages are not counted here."""
        return ChannelInfo(
            self.id,
            self.name,
            self.expires_at,
            self.ttl_s,
            0,
            self.last_message_id,
            retention=self.retention,
            owner=self.owner,
        )


@dataclass(frozen=True, slots=True)
class Closed:
    """A publisher closed the channel (the record it replaces is gone with it)."""

    id: ChannelId


@dataclass(frozen=True, slots=True)
class Expired:
    """Channels past their expiry, dropped in one go."""

    ids: tuple[ChannelId, ...]


Entry = Floor | ChannelRecord | Closed | Expired


@dataclass(frozen=True, slots=True)
class Copy:
    """One publication's copy on one channel's subject, as a node receives it: its
    stream sequence, the sequence of the channel's previous copy (0: none, or not
    known), the message and when it was published (its channels live a TTL from then)."""

    seq: int
    previous: int
    channel_id: ChannelId
    message: Message
    now: float


def encode(entry: Entry) -> bytes:
    if isinstance(entry, ChannelRecord):
        body = {
            "id": entry.id,
            "name": entry.name,
            "ttl": entry.ttl_s,
            "exp": entry.expires_at,
            "last": entry.last_message_id,
            "drop": entry.dropped_through,
        }
        # Left out when there is none (the server's retention): records of older
        # versions read the same.
        if entry.retention.message_ttl_s is not None:
            body["mttl"] = entry.retention.message_ttl_s
        if entry.retention.max_messages is not None:
            body["mmax"] = entry.retention.max_messages
        if entry.owner is not None:
            body["owner"] = entry.owner
        return orjson.dumps(body)
    if isinstance(entry, Closed):
        return orjson.dumps({"id": entry.id, "closed": True})
    if isinstance(entry, Expired):
        return orjson.dumps({"ids": entry.ids})
    return orjson.dumps({"m": entry.message_id, "c": entry.channel_id})


def decode(kind: str, data: bytes) -> Entry:
    """The control entry of a message on a subject of `kind` (`layout.Subjects.kind`)."""
    head = orjson.loads(data)
    if kind == "channel":
        if head.get("closed"):
            return Closed(ChannelId(head["id"]))
        return ChannelRecord(
            ChannelId(head["id"]),
            head["name"],
            float(head["ttl"]),
            float(head["exp"]),
            None if head["last"] is None else MessageId(head["last"]),
            int(head["drop"]),
            _retention(head),
            head.get("owner"),
        )
    if kind == "expired":
        return Expired(tuple(ChannelId(c) for c in head["ids"]))
    if kind == "floor":
        return Floor(int(head["m"]), int(head["c"]))
    raise ValueError(f"unknown entry kind {kind!r}")


def _retention(head: dict[str, object]) -> Retention:
    keep_s, cap = head.get("mttl"), head.get("mmax")
    if keep_s is None and cap is None:
        return SERVER_RETENTION
    return Retention(
        None if not isinstance(keep_s, int | float) else float(keep_s),
        None if not isinstance(cap, int) else cap,
    )


def copy_headers(message: Message, now: float) -> dict[str, str]:
    return {
        ID: str(message.id),
        CHANNELS: ",".join(map(str, message.channels)),
        NOW: repr(now),
    }


def decode_copy(
    headers: Mapping[str, str], data: bytes, channel_id: ChannelId, *, previous_key: str
) -> Copy:
    """A copy from a republished message or a direct get (`previous_key` names the
    header holding the channel's previous sequence; absent: 0)."""
    message_id = MessageId(int(headers[ID]))
    channels = tuple(ChannelId(int(c)) for c in headers[CHANNELS].split(","))
    message = Message(message_id, message_id / 1_000_000, channels, data)
    return Copy(
        int(headers["Nats-Sequence"]),
        int(headers.get(previous_key) or 0),
        channel_id,
        message,
        float(headers[NOW]),
    )


def last_id(headers: Mapping[str, str] | None) -> int:
    return int((headers or {}).get(LAST_ID) or 0)


def control_seq(headers: Mapping[str, str] | None) -> int:
    return int((headers or {}).get(CONTROL) or 0)

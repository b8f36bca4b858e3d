"""The entries of the log, as they travel in JetStream messages: a JSON head, and for a
publication its payloads after it (stored once, however many channels they go to)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from pushup.core.model import ChannelId, MessageId


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


@dataclass(frozen=True, slots=True)
class Closed:
    """A publisher closed the channel (the record it replaces is gone with it)."""

    id: ChannelId


@dataclass(frozen=True, slots=True)
class Expired:
    """Channels past their expiry, dropped in one go."""

    ids: tuple[ChannelId, ...]


@dataclass(frozen=True, slots=True)
class Published:
    """One publication: its messages, in id order, each with its sorted channel ids;
    `now` is when it happened (its channels live another TTL from then)."""

    now: float
    messages: tuple[tuple[MessageId, tuple[ChannelId, ...], bytes], ...]


Entry = Floor | ChannelRecord | Closed | Expired | Published


def encode(entry: Entry) -> bytes:
    if isinstance(entry, Published):
        head = {
            "now": entry.now,
            "m": [[mid, channels, len(data)] for mid, channels, data in entry.messages],
        }
        return orjson.dumps(head) + b"\n" + b"".join(data for _, _, data in entry.messages)
    if isinstance(entry, ChannelRecord):
        return orjson.dumps(
            {
                "id": entry.id,
                "name": entry.name,
                "ttl": entry.ttl_s,
                "exp": entry.expires_at,
                "last": entry.last_message_id,
                "drop": entry.dropped_through,
            }
        )
    if isinstance(entry, Closed):
        return orjson.dumps({"id": entry.id, "closed": True})
    if isinstance(entry, Expired):
        return orjson.dumps({"ids": entry.ids})
    return orjson.dumps({"m": entry.message_id, "c": entry.channel_id})


def decode(kind: str, data: bytes) -> Entry:
    """The entry of a message on a subject of `kind` (see `layout.Subjects.kind`)."""
    if kind == "message":
        end = data.index(b"\n")
        head = orjson.loads(data[:end])
        messages = []
        pos = end + 1
        for mid, channels, size in head["m"]:
            messages.append(
                (
                    MessageId(mid),
                    tuple(ChannelId(c) for c in channels),
                    data[pos : pos + size],
                )
            )
            pos += size
        return Published(float(head["now"]), tuple(messages))
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
        )
    if kind == "expired":
        return Expired(tuple(ChannelId(c) for c in head["ids"]))
    if kind == "floor":
        return Floor(int(head["m"]), int(head["c"]))
    raise ValueError(f"unknown entry kind {kind!r}")

"""Idempotent publishing: a publisher's key for one publication request, and the answer
an engine keeps for it, so that a retry gets the first answer again and nothing is
stored or delivered twice.

An engine keeps, per key, the request's fingerprint and each message's id and channels:
a retry carries the same publications (its fingerprint says so), so their data comes
from the retry itself, and the kept answer stays small.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from pushup.core.engine import Publication
from pushup.core.model import ChannelId, Message, MessageId

# One message of a first answer: its id and the channels it went to.
Entry = tuple[MessageId, tuple[ChannelId, ...]]


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """An `Idempotency-Key` as the engines use it."""

    # Whose key it is (a digest of the publisher key; "" without one): two publishers
    # never share a key.
    scope: str
    key: str
    # The request's digest: the same key with another request is refused.
    fingerprint: str
    # How long the first answer is kept, in seconds.
    window_s: float

    @property
    def digest(self) -> str:
        """Scope and key as one fixed-size name of letters and digits, safe as a Redis
        key, a NATS subject token or an SQLite key whatever the key holds."""
        return hashlib.sha256(f"{self.scope}\0{self.key}".encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class Answer:
    """The first answer to a key: what a retry within the window gets again."""

    digest: str
    fingerprint: str
    entries: tuple[Entry, ...]
    # Epoch seconds: from then on the key is free again.
    expires_at: float


def fingerprint(publications: Sequence[Publication], *, batch: bool) -> str:
    """A digest of a publication request as validated: its kind, and each publication's
    channels and data (so spacing or key order in its JSON body does not matter, only
    what would be stored)."""
    digest = hashlib.sha256(b"batch" if batch else b"single")
    for refs, data in publications:
        digest.update(orjson.dumps([list(refs), len(data)]))
        digest.update(data)
    return digest.hexdigest()[:40]


def entries(messages: Sequence[Message]) -> tuple[Entry, ...]:
    return tuple((message.id, message.channels) for message in messages)


def replay(publications: Sequence[Publication], kept: Sequence[Entry]) -> list[Message]:
    """The messages of a first answer again, their data from the retry (the same, as its
    fingerprint says)."""
    return [
        Message(message_id, message_id / 1_000_000, channels, data)
        for (message_id, channels), (_, data) in zip(kept, publications, strict=True)
    ]


def encode(answer: Answer) -> bytes:
    """An answer as JSON, for engines that keep it as bytes (the journal, NATS)."""
    return orjson.dumps(
        {
            "digest": answer.digest,
            "fingerprint": answer.fingerprint,
            "messages": [[message_id, list(channels)] for message_id, channels in answer.entries],
            "expires_at": answer.expires_at,
        }
    )


def decode(raw: bytes) -> Answer:
    """An answer from `encode`; raises ValueError for anything else."""
    try:
        obj = orjson.loads(raw)
        return Answer(
            str(obj["digest"]),
            str(obj["fingerprint"]),
            tuple(
                (MessageId(int(message_id)), tuple(ChannelId(int(c)) for c in channels))
                for message_id, channels in obj["messages"]
            ),
            float(obj["expires_at"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"not an answer: {exc}") from None

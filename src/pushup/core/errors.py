"""Domain errors raised by engines and the hub; the HTTP layer maps them to statuses."""

from __future__ import annotations

from collections.abc import Sequence

from pushup.core.model import ChannelRef


class PushUpError(Exception):
    """Base of every expected failure: client-caused, or a shared engine out of reach."""


class ChannelsNotFound(PushUpError):
    """Some named channels are unknown, expired or closed."""

    def __init__(self, refs: Sequence[ChannelRef]) -> None:
        super().__init__(f"unknown channels: {list(refs)}")
        self.refs = list(refs)


class SystemChannel(PushUpError):
    """A channel of the server's own (`$events`): only the server writes it, and only
    the publisher reads it, at its own endpoint."""

    def __init__(self, refs: Sequence[ChannelRef]) -> None:
        super().__init__(f"the server's own channels: {list(refs)}")
        self.refs = list(refs)


class NameTaken(PushUpError):
    """A live channel already carries this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"channel name {name!r} is taken")
        self.name = name


class NotAllowed(PushUpError):
    """A publisher key asked for channels outside its prefixes (or unnamed channels
    another key created)."""

    def __init__(self, key: str, refs: Sequence[ChannelRef]) -> None:
        super().__init__(f"publisher key {key!r} may not use channels {list(refs)}")
        self.key = key
        self.refs = list(refs)


class EngineUnavailable(PushUpError):
    """The engine's backing store cannot be reached now; the request may be retried.

    Raised instead of waiting without bound or dropping the request silently."""


class NotReplicated(EngineUnavailable):
    """The write was stored, but fewer replicas than asked for confirmed it in time: a
    failover may lose it, and a retry may store it twice."""


class StorageFull(EngineUnavailable):
    """The disk the engine writes to is full: nothing was stored; it may be retried once
    there is space again."""


class IdempotencyKeyReused(PushUpError):
    """An `Idempotency-Key` already went with another request (other publications, or
    `/publish` against `/publish/batch`) within its window."""

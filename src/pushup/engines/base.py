"""The engine boundary: where channels and messages live, and who hears of changes.

The hub (parked subscriptions, fan-out) talks only to this interface, so the storage can
be the embedded in-memory engine or a shared one for several nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pushup.core.model import ChannelId, ChannelInfo, ChannelRef, Message, MessageId, ReadResult

# One publication as the engine takes it: target channels and the JSON-encoded payload.
Publication = tuple[Sequence[ChannelRef], bytes]


class EngineListener(Protocol):
    """Told synchronously by the engine of every change subscribers must hear about."""

    def published(self, messages: Sequence[Message], evicted: frozenset[ChannelId]) -> None:
        """`messages` were stored, in id order; `evicted` lists channels that already
        dropped some of them (more than `max_messages` in one batch)."""

    def closed(self, channel_ids: Sequence[ChannelId]) -> None:
        """These channels were closed or expired."""

    async def resync(self) -> None:
        """The engine may have missed events (its link to a shared store was lost and
        is back): re-read the store for everything waiting on it. The engine holds
        further events back until this returns, so none overtakes the re-read."""


class Engine(Protocol):
    """Channels and the message cache. A shared engine raises EngineUnavailable from
    any call while its store is out of reach."""

    async def start(self, listener: EngineListener) -> None: ...

    async def close(self) -> None: ...

    async def create_channel(self, ttl_s: float | None, name: str | None) -> ChannelInfo:
        """Raises NameTaken."""

    async def renew_channel(self, ref: ChannelRef, ttl_s: float | None) -> ChannelInfo:
        """Raises ChannelsNotFound."""

    async def close_channel(self, ref: ChannelRef) -> None:
        """Raises ChannelsNotFound."""

    async def channel_info(self, ref: ChannelRef) -> ChannelInfo:
        """Raises ChannelsNotFound."""

    async def resolve(self, refs: Sequence[ChannelRef]) -> list[ChannelId]:
        """Ids of live channels, in the order given; raises ChannelsNotFound for the rest."""

    async def publish(self, publications: Sequence[Publication]) -> list[Message]:
        """All or nothing: raises ChannelsNotFound and stores nothing if any is unknown."""

    async def read(
        self,
        channel_ids: Sequence[ChannelId],
        since: MessageId | None,
        start: float | None,
        end: float | None,
    ) -> ReadResult:
        """Cached messages after `since` with `start <= time <= end`, each once."""

    def high_water(self) -> MessageId:
        """Every message published from now on has an id above this, and every one at
        or below it has already been told to the listener (or covered by a resync)."""

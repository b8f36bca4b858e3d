"""What observation reads of the server, as narrow protocols.

Observation sits beside the transports, not above them: it names the few things it
reads (of the hub, the listening server, a request, an error being answered) instead
of importing the HTTP layer, so neither knows the other's internals.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence, Sized
from typing import Protocol

from pushup.core.engine import CacheStats, Publication, SubscriberCount
from pushup.core.model import ChannelId, ChannelInfo, ChannelPage, ChannelRef, Message


class ObservedHub(Protocol):
    """The hub, as the snapshots and the dashboard's stats channel use it."""

    @property
    def shared(self) -> bool: ...

    def parked(self) -> int: ...

    def subscribers(self, channel_id: ChannelId) -> int: ...

    def busiest(
        self, n: int, leave_out: Collection[ChannelId] = ()
    ) -> list[tuple[ChannelId, int]]: ...

    async def list_channels(
        self, prefix: str | None, after: ChannelRef | None, limit: int
    ) -> tuple[ChannelPage, list[SubscriberCount]]: ...

    def cache_stats(self, leave_out: Collection[ChannelId] = ()) -> CacheStats | None: ...

    async def get_or_create_channel(
        self, ttl_s: float | None, name: str, *, owner: str | None = None
    ) -> tuple[ChannelInfo, bool]: ...

    async def resolve(self, refs: Sequence[ChannelRef]) -> list[ChannelId]: ...

    async def publish(
        self, publications: Sequence[Publication], *, counted: bool = True
    ) -> list[Message]: ...


class ObservedServer(Protocol):
    """The listening server: its open connections and its open streams."""

    @property
    def connections(self) -> Sized: ...

    @property
    def heartbeat(self) -> Sized: ...


class ObservedRequest(Protocol):
    """A request being handled, as its log lines and error answers name it."""

    # Lower-case names; a request id made here is kept in them.
    headers: dict[str, str]

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def publisher_name(self) -> str | None:
        """The name of the publisher key it came with (None: none, or not yet known)."""


class AnsweredError(Protocol):
    """An error being answered: counted by its code, logged with its status."""

    @property
    def status(self) -> int: ...

    @property
    def code(self) -> str: ...

    @property
    def detail(self) -> str: ...

"""`channel_events`: the application follows its channels' lives (created, closed,
expired) from a server run with `--channel-events`, as a long poll of `$events` with
the publisher key, keeping the cursor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

from pushup.client import wire
from pushup.client.subscribe import Subscription


@dataclass(frozen=True, slots=True)
class ChannelEvent:
    """One event: `event` is "created", "closed" or "expired"; `id` is its message id
    (a cursor to resume after it); `after_gap` as for `Message` (events were dropped
    from the cache before they could be read: the application may want to look its
    channels up again)."""

    event: str
    channel: int
    name: str | None
    at: float  # epoch seconds
    id: str
    after_gap: bool = False


class ChannelEvents(wire.AsyncClosing):
    """An async iterator of `ChannelEvent`s; `cursor` as for a subscription."""

    def __init__(self, subscription: Subscription) -> None:
        self._subscription = subscription

    @property
    def cursor(self) -> str | None:
        return self._subscription.cursor

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChannelEvent:
        message = await anext(self._subscription)
        data = message.data
        return ChannelEvent(
            data["event"], data["channel"], data["name"], data["at"], message.id, message.after_gap
        )

    async def aclose(self) -> None:
        await self._subscription.aclose()


def channel_events(
    base_url: str,
    key: str | Callable[[], str] | None = None,
    *,
    since: str | None = None,
    timeout: float | None = None,
    backoff: float = 0.1,
    max_backoff: float = 10.0,
) -> ChannelEvents:
    """Iterate over the channel events after the cursor `since` (None: every one still
    cached), then every later one; `key` is the server's `--publisher-key`. Failures
    are ridden out as by `subscribe`; a wrong key raises `Unauthorized`.

        async with channel_events(url, key) as events:
            async for event in events:
                if event.event in ("closed", "expired"):
                    forget(event.channel)
    """
    return ChannelEvents(
        Subscription(
            base_url,
            "$events",
            since,
            timeout,
            backoff,
            max_backoff,
            key,
            path="/subscribe/events",
        )
    )

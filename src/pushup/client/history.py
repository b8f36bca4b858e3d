"""`history`: what a server caches for some channels, read page by page (`limit`), so
a client catches up on a large cache without one huge answer, then knows the cursor to
go on from (for `subscribe`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx

from pushup.client import wire
from pushup.client.wire import Channels, Message

_TIMEOUT_S = 30.0


class History:
    """An async iterator of the cached `Message`s after `since`, oldest first, each once;
    `cursor` is where it stopped (pass it to `subscribe` to go on live)."""

    def __init__(
        self,
        base_url: str,
        channels: Channels,
        since: str | None,
        page_size: int,
        token: str | Callable[[], str] | None,
    ) -> None:
        if not 1 <= page_size <= 10_000:
            raise ValueError("page_size must be from 1 to 10000")
        self.base_url = base_url
        self.channels = tuple(wire.channel_list(channels))
        self.cursor = since
        self.pages = 0
        self._page_size = page_size
        self._token = token

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._read()

    async def _read(self) -> AsyncIterator[Message]:
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=wire.headers(None), timeout=_TIMEOUT_S
        ) as client:
            while True:
                params = wire.poll_params(self.channels, self.cursor, 0, limit=self._page_size)
                token = self._token() if callable(self._token) else self._token
                headers = None if token is None else {"Authorization": f"Bearer {token}"}
                answer = wire.poll_answer(
                    await client.get("/subscribe", params=params, headers=headers)
                )
                self.pages += 1
                for message in answer.messages:
                    self.cursor = message.id
                    yield message
                self.cursor = answer.cursor
                if not answer.more:
                    return


def history(
    base_url: str,
    channels: Channels,
    *,
    since: str | None = None,
    page_size: int = 100,
    token: str | Callable[[], str] | None = None,
) -> History:
    """The messages cached for `channels` after the cursor `since` (None: all of them),
    oldest first, each once, read `page_size` at a time; errors raise as `subscribe`'s do.

        pages = history(url, ["room:1"])
        async for message in pages:
            ...
        live = subscribe(url, ["room:1"], since=pages.cursor)
    """
    return History(base_url, channels, since, page_size, token)

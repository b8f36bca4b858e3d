"""`subscribe`: the messages of some channels as an async iterator, over long polls that
keep the cursor and outlast server restarts and network failures."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace
from typing import Self

import httpx

from pushup.client import wire
from pushup.client.errors import RetryLater, ServerError, TooManyRequests
from pushup.client.wire import ChannelRef, Channels, Message, PollAnswer

log = logging.getLogger("pushup.client")

# The server's wait when a poll names none: 50 s, or its --max-timeout if lower.
_DEFAULT_WAIT_S = 50.0
# How late an answer may be, beyond the poll's own wait, before the connection counts as
# dead: the server answers at the deadline, this covers a loaded server or proxy.
_READ_MARGIN_S = 15.0
_CONNECT_TIMEOUT_S = 10.0


def subscribe(
    base_url: str,
    channels: Channels,
    *,
    since: str | None = None,
    last: int | None = None,
    timeout: float | None = None,
    backoff: float = 0.1,
    max_backoff: float = 10.0,
    token: str | Callable[[], str] | None = None,
) -> Subscription:
    """Iterate over the messages published to `channels` (ids or names), in order,
    each once, from after the cursor `since` (None: every message still cached), or
    from the `last` newest of those (a chat's last lines), then every later one.

    `timeout` is each poll's wait in seconds (None: the server's default). After a
    failure (no connection, a 5xx) it polls again after a pause that doubles from
    `backoff` up to `max_backoff` seconds, with jitter, and starts from `backoff`
    again after a success; it never gives up. `token` is a subscriber token (a JWT from
    the web app, for a server with `--subscriber-secret`), or a function called before
    each poll that returns a fresh one; it is sent as `Authorization: Bearer`, and a
    refused one raises `Unauthorized` (`Forbidden` for channels it does not grant).
    It raises `ChannelClosed` when a channel
    is closed or expires, `ChannelNotFound` if one is unknown, and `InvalidRequest`
    for bad arguments (`ValueError` for a `timeout` of 0 or less).

        async with subscribe(url, ["room:1", 42]) as messages:
            async for message in messages:
                ...
    """
    return Subscription(base_url, channels, since, timeout, backoff, max_backoff, token, last)


class Subscription(wire.AsyncClosing):
    """An async iterator of `Message`s that long-polls `/subscribe`.

    `cursor` is the position after the last message yielded (pass it as `since` to
    resume elsewhere), `gaps` counts answers in which the server said messages were
    dropped from its cache before they could be read (the next message then has
    `after_gap` set), and `failures` counts failed polls since the last success.

    One connection, opened at the first iteration, is closed by `aclose()`, by leaving
    `async with`, by cancelling the task that iterates, or when the iterator is
    garbage collected after the consumer broke out of its loop."""

    def __init__(
        self,
        base_url: str,
        channels: Channels,
        since: str | None,
        timeout: float | None,
        backoff: float,
        max_backoff: float,
        token: str | Callable[[], str] | None = None,
        last: int | None = None,
        path: str = "/subscribe",
    ) -> None:
        self._poller = _Poller(
            base_url, channels, since, timeout, backoff, max_backoff, token, last, path
        )
        # The generator refers to the poller, never to this object: dropping this object
        # then frees the generator by reference counting, and asyncio closes it with its
        # connection. In a reference cycle, the garbage collector would finalize the
        # connection's socket before asyncio got the chance to close it properly.
        self._messages = self._poller.run()

    @property
    def channels(self) -> tuple[ChannelRef, ...]:
        return self._poller.channels

    @property
    def cursor(self) -> str | None:
        return self._poller.cursor

    @property
    def gaps(self) -> int:
        return self._poller.gaps

    @property
    def failures(self) -> int:
        return self._poller.failures

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        return await anext(self._messages)

    async def aclose(self) -> None:
        """Stop: close the connection. Iterating afterwards ends at once."""
        await self._messages.aclose()


class _Poller:
    """The polling loop and its state."""

    def __init__(
        self,
        base_url: str,
        channels: Channels,
        since: str | None,
        timeout: float | None,
        backoff: float,
        max_backoff: float,
        token: str | Callable[[], str] | None = None,
        last: int | None = None,
        path: str = "/subscribe",
    ) -> None:
        if timeout is not None and not timeout > 0:
            # The server answers a 0 s poll at once: re-polling at once would spin.
            raise ValueError("timeout must be above 0 seconds, or None")
        self.base_url = base_url
        self.channels = tuple(wire.channel_list(channels))
        self.cursor = since
        self.gaps = 0
        self.failures = 0
        self._timeout = timeout
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._token = token
        # Asked of the first answer only: later polls go on from its cursor.
        self._last = last
        self._path = path

    async def run(self) -> AsyncGenerator[Message, None]:
        # A generator, so that every way out (close, cancel, collection) runs the
        # `async with` exit that closes the connection.
        wait_s = _DEFAULT_WAIT_S if self._timeout is None else self._timeout
        timeouts = httpx.Timeout(_CONNECT_TIMEOUT_S, read=wait_s + _READ_MARGIN_S)
        after_gap = False
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=wire.headers(None), timeout=timeouts
        ) as client:
            while True:
                answer = await self._poll(client)
                if answer is None:
                    continue
                if answer.gap:
                    self.gaps += 1
                    after_gap = True
                for message in answer.messages:
                    # Before the yield: a consumer that stops here has seen this one.
                    self.cursor = message.id
                    yield replace(message, after_gap=True) if after_gap else message
                    after_gap = False
                # Re-polling with the answer's cursor (never a guess) is what makes each
                # message arrive once: the server promises nothing is missed after it.
                self.cursor = answer.cursor
                self._last = None

    async def _poll(self, client: httpx.AsyncClient) -> PollAnswer | None:
        """One long poll; None, after a pause, if it failed in a way that may pass."""
        params = wire.poll_params(self.channels, self.cursor, self._timeout, last=self._last)
        token = self._token() if callable(self._token) else self._token
        headers = None if token is None else {"Authorization": f"Bearer {token}"}
        try:
            answer = wire.poll_answer(await client.get(self._path, params=params, headers=headers))
        except httpx.TransportError as exc:
            await self._pause(repr(exc), None)
            return None
        except (ServerError, TooManyRequests) as exc:
            # A limit (429) passes as an outage does: wait at least as asked.
            retry_after = exc.retry_after if isinstance(exc, RetryLater) else None
            await self._pause(str(exc), retry_after)
            return None
        self.failures = 0
        return answer

    async def _pause(self, why: str, retry_after: float | None) -> None:
        self.failures += 1
        ceiling = min(self._max_backoff, self._backoff * 2 ** min(self.failures - 1, 30))
        # Jitter, so that the subscribers of a restarted server do not all come back in
        # the same instant.
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._max_backoff))
        log.warning("poll of %s failed (%s); retrying in %.2f s", self.base_url, why, delay)
        await asyncio.sleep(delay)

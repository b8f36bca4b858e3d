"""The HTTP API as data, shared by the sync and async clients: what each call sends,
what its answer becomes, and which exception an error answer becomes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Self, TypeVar
from urllib.parse import quote, urlencode

import httpx
import orjson

from pushup import __version__
from pushup.client.errors import (
    BY_CODE,
    BY_STATUS,
    ApiError,
    PayloadTooLarge,
    PushUpError,
    RetryLater,
    ServerError,
    TransportError,
)

T = TypeVar("T")

# A channel as the API names it: its integer id or its unique name.
ChannelRef = int | str
Channels = ChannelRef | Sequence[ChannelRef]

USER_AGENT = f"pushup-client/{__version__}"
# The server's limit on a request body (docs/api.md, 413 payload_too_large).
MAX_BODY_BYTES = 1 << 20
# A publication is tried again this many times by default after no answer, a 429, or a
# 502, 503 or 504; first after FIRST_RETRY_S, doubling, or after the server's
# Retry-After, never more than MAX_RETRY_S.
RETRIES = 3
FIRST_RETRY_S = 0.25
MAX_RETRY_S = 5.0
_RETRIED_STATUSES = frozenset((502, 503, 504))


class AsyncClosing:
    """`async with` closes it: `aclose()` on leaving, whatever happened."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@dataclass(frozen=True, slots=True)
class Channel:
    """A live channel: its id, its name (if it has one) and when it expires, and how
    long and how many of its messages it keeps (its own, or the server's limits)."""

    id: int
    name: str | None
    expires_at: float  # epoch seconds
    message_ttl: float | None = field(default=None, kw_only=True)  # seconds
    max_messages: int | None = field(default=None, kw_only=True)


@dataclass(frozen=True, slots=True)
class ListedChannel(Channel):
    """A channel as a listing shows it (`GET /channels`)."""

    subscribers: int  # polls parked on it now, over every node
    messages: int  # messages cached now


@dataclass(frozen=True, slots=True)
class ChannelPage:
    """One page of a listing, and the cursor of the next (None: this was the last)."""

    channels: list[ListedChannel]
    next: str | None


@dataclass(frozen=True, slots=True)
class ChannelState(Channel):
    """A channel with what it holds now (`GET /channels/{id}`)."""

    subscribers: int  # polls parked on it now
    messages: int  # messages cached now
    last_message_id: str | None  # the last ever published on it


@dataclass(frozen=True, slots=True)
class Presence:
    """Who is on a channel now (`GET /channels/{id}/presence`), over every node."""

    id: int
    name: str | None
    polls: int  # long polls parked on it
    streams: int  # SSE and WebSocket streams open on it
    anonymous: int  # of those, the ones whose token had no `sub` claim (or no token)
    subs: tuple[str, ...]  # the distinct `sub` claims among them, sorted, bounded
    sub_count: int  # how many distinct: exact if `subs_complete`, else at least
    subs_complete: bool  # whether `subs` lists them all
    # Several nodes share the engine: how many are live, and how many answered in time
    # (fewer makes every figure a lower bound); None on a server of one node.
    live_nodes: int | None = None
    counted_nodes: int | None = None

    @property
    def connections(self) -> int:
        return self.polls + self.streams


@dataclass(frozen=True, slots=True)
class Published:
    """A publication as the server recorded it. Its `id` is also a cursor: `subscribe`
    with `since=id` gets what was published after it."""

    id: str
    time: float  # epoch seconds
    channels: tuple[int, ...]  # the channels it went to, as ids, sorted


@dataclass(frozen=True, slots=True)
class Message:
    """A message as a subscription receives it.

    `channels` lists the subscribed channels it went to; `after_gap` is true when the
    server dropped from its cache messages the subscription would have received just
    before this one (by age or count), so the consumer may want to reload its state."""

    id: str
    time: float
    channels: tuple[int, ...]
    data: Any
    after_gap: bool = False


@dataclass(frozen=True, slots=True)
class PollAnswer:
    """One `GET /subscribe` answer."""

    messages: list[Message]
    cursor: str
    gap: bool
    # Whether a paged poll (`limit`) left more cached messages; None for other polls.
    more: bool | None = None


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One publisher request and how to read its success."""

    method: str
    path: str
    body: Any  # the JSON body, or None for no body
    ok: int  # the success status
    parse: Callable[[Any], T]  # the decoded JSON body (None if empty) to the result
    also_ok: tuple[int, ...] = ()  # other success statuses (200 for a channel found)
    headers: tuple[tuple[str, str], ...] = ()  # besides the client's own

    def request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        if self.body is None:
            return client.build_request(self.method, self.path, headers=dict(self.headers))
        # orjson, as the server: the same JSON (64-bit integers, no NaN) on both ends.
        content = orjson.dumps(self.body)
        if len(content) > MAX_BODY_BYTES:
            # Checked here: the server answers 413 as soon as it knows and closes the
            # connection, which a client still sending the body sees as a reset.
            detail = f"the body is {len(content)} bytes, over the limit of {MAX_BODY_BYTES}"
            body = {"error": "payload_too_large", "detail": detail}
            raise PayloadTooLarge(413, "payload_too_large", detail, body)
        headers = {**_JSON, **dict(self.headers)}
        return client.build_request(self.method, self.path, content=content, headers=headers)

    def result(self, response: httpx.Response) -> T:
        if response.status_code != self.ok and response.status_code not in self.also_ok:
            raise error_from(response)
        try:
            return self.parse(_json(response) if response.content else None)
        except (KeyError, TypeError) as exc:
            raise _unexpected(response, f"missing or mistyped field: {exc}") from None


_JSON = {"Content-Type": "application/json"}


def headers(key: str | None) -> dict[str, str]:
    """Headers on every request: who is calling and, for publishers, the key."""
    found = {"User-Agent": USER_AGENT}
    if key is not None:
        found["Authorization"] = f"Bearer {key}"
    return found


def channel_list(channels: Channels) -> list[ChannelRef]:
    """One channel or several, as a list (a lone name is one channel, not letters)."""
    if isinstance(channels, int | str):
        return [channels]
    return list(channels)


def _path(channel: ChannelRef) -> str:
    # Names may hold any character, "/" and "%" included: encode them all.
    return "/channels/" + quote(str(channel), safe="")


def _ttl(ttl: float | None) -> dict[str, float]:
    return {} if ttl is None else {"ttl": ttl}


def create_channel(
    name: str | None,
    ttl: float | None,
    exist_ok: bool = False,
    *,
    message_ttl: float | None = None,
    max_messages: int | None = None,
) -> Call[Channel]:
    body: dict[str, Any] = _ttl(ttl)
    if name is not None:
        body["name"] = name
    if message_ttl is not None:
        body["message_ttl"] = message_ttl
    if max_messages is not None:
        body["max_messages"] = max_messages
    if exist_ok:
        if name is None:
            raise ValueError("exist_ok needs a name: only a named channel can already exist")
        body["exist_ok"] = True
        return Call("POST", "/channels", body, 201, _channel, also_ok=(200,))
    return Call("POST", "/channels", body, 201, _channel)


def renew_channel(channel: ChannelRef, ttl: float | None) -> Call[Channel]:
    return Call("POST", _path(channel) + "/renew", _ttl(ttl), 200, _channel)


def close_channel(channel: ChannelRef) -> Call[None]:
    return Call("DELETE", _path(channel), None, 204, lambda _: None)


def channel_info(channel: ChannelRef) -> Call[ChannelState]:
    return Call("GET", _path(channel), None, 200, _channel_state)


def list_channels(prefix: str | None, limit: int | None, after: str | None) -> Call[ChannelPage]:
    query = {"prefix": prefix, "limit": limit, "after": after}
    given = urlencode({key: value for key, value in query.items() if value is not None})
    return Call("GET", "/channels" + (f"?{given}" if given else ""), None, 200, _page)


def presence(channel: ChannelRef) -> Call[Presence]:
    return Call("GET", _path(channel) + "/presence", None, 200, _presence)


def publish(channels: Channels, data: Any, idempotency_key: str | None) -> Call[Published]:
    body = {"channels": channel_list(channels), "data": data}
    headers = _idempotency(idempotency_key)
    return Call("POST", "/publish", body, 201, _published, headers=headers)


def publish_batch(
    items: Iterable[tuple[Channels, Any]], idempotency_key: str | None
) -> Call[list[Published]]:
    body = {"messages": [{"channels": channel_list(c), "data": d} for c, d in items]}
    return Call(
        "POST",
        "/publish/batch",
        body,
        201,
        lambda obj: [_published(item) for item in obj["messages"]],
        headers=_idempotency(idempotency_key),
    )


def _idempotency(key: str | None) -> tuple[tuple[str, str], ...]:
    """The publication's Idempotency-Key: the caller's, or a new one; the same on every
    retry of the call, so the server stores it once."""
    return (("Idempotency-Key", str(uuid.uuid4()) if key is None else key),)


def retry_delay(error: PushUpError, attempt: int) -> float | None:
    """Seconds to wait before trying a publication again after `error`, its failure
    number `attempt` (from 0); None when trying again cannot help."""
    if isinstance(error, RetryLater) and error.retry_after is not None:
        return min(error.retry_after, MAX_RETRY_S)
    if isinstance(error, TransportError | RetryLater) or (
        isinstance(error, ServerError) and error.status in _RETRIED_STATUSES
    ):
        return min(FIRST_RETRY_S * 2.0**attempt, MAX_RETRY_S)
    return None


def poll_params(
    channels: Sequence[ChannelRef],
    since: str | None,
    timeout: float | None,
    *,
    last: int | None = None,
    limit: int | None = None,
) -> dict[str, str]:
    params = {"channels": ",".join(map(str, channels))}
    if since is not None:
        params["since"] = since
    if timeout is not None:
        params["timeout"] = f"{timeout:g}"
    if last is not None:
        params["last"] = str(last)
    if limit is not None:
        params["limit"] = str(limit)
    return params


def poll_answer(response: httpx.Response) -> PollAnswer:
    if response.status_code != 200:
        raise error_from(response)
    try:
        obj = _json(response)
        messages = [
            Message(m["id"], m["time"], tuple(m["channels"]), m["data"]) for m in obj["messages"]
        ]
        more = obj.get("more")
        return PollAnswer(
            messages, obj["cursor"], bool(obj["gap"]), None if more is None else bool(more)
        )
    except (KeyError, TypeError) as exc:
        raise _unexpected(response, f"missing or mistyped field: {exc}") from None


def error_from(response: httpx.Response) -> ApiError:
    """The exception for an error answer: by the server's machine code, or by status
    when the answer is not the server's own (e.g. a proxy's 502)."""
    status = response.status_code
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        text = response.text.strip()[:200] or response.reason_phrase
        body = {"error": f"http_{status}", "detail": text}
    code: str = body["error"]
    detail = str(body.get("detail", ""))
    cls = BY_CODE.get(code) or BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    if issubclass(cls, RetryLater):
        return cls(status, code, detail, body, _retry_after(response))
    return cls(status, code, detail, body)


def _retry_after(response: httpx.Response) -> float | None:
    # Only the seconds form: PushUp sends it, and a date would need a clock in common.
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def _json(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise _unexpected(response, "the body is not JSON") from None


def _unexpected(response: httpx.Response, why: str) -> ApiError:
    body = {"error": "unexpected_response", "detail": why}
    return ApiError(response.status_code, "unexpected_response", why, body)


def _retention(obj: Any) -> dict[str, Any]:
    # Servers before per-channel retention leave them out.
    return {"message_ttl": obj.get("message_ttl"), "max_messages": obj.get("max_messages")}


def _channel(obj: Any) -> Channel:
    return Channel(obj["id"], obj["name"], obj["expires_at"], **_retention(obj))


def _channel_state(obj: Any) -> ChannelState:
    return ChannelState(
        obj["id"],
        obj["name"],
        obj["expires_at"],
        obj["subscribers"],
        obj["messages"],
        obj["last_message_id"],
        **_retention(obj),
    )


def _page(obj: Any) -> ChannelPage:
    listed = [
        ListedChannel(
            c["id"], c["name"], c["expires_at"], c["subscribers"], c["messages"], **_retention(c)
        )
        for c in obj["channels"]
    ]
    return ChannelPage(listed, obj["next"])


def _presence(obj: Any) -> Presence:
    nodes = obj.get("nodes") or {}
    return Presence(
        obj["id"],
        obj["name"],
        obj["polls"],
        obj["streams"],
        obj["anonymous"],
        tuple(obj["subs"]),
        obj["sub_count"],
        obj["subs_complete"],
        nodes.get("live"),
        nodes.get("counted"),
    )


def _published(obj: Any) -> Published:
    return Published(obj["id"], obj["time"], tuple(obj["channels"]))

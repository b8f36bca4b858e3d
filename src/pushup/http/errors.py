"""API errors: each knows its status, machine code and human sentence; and `answer`,
the one place where the domain errors of core/errors.py become API errors."""

from __future__ import annotations

from typing import Any

import orjson

from pushup.core.errors import (
    ChannelsNotFound,
    EngineUnavailable,
    IdempotencyKeyReused,
    NameTaken,
    NotAllowed,
    NotReplicated,
    StorageFull,
    SystemChannel,
)

# Sent with every 503: the node (or the store behind it) may serve again in a moment.
RETRY_SOON = (("Retry-After", "1"),)


class ApiError(Exception):
    """An error answered as `{"error": code, "detail": sentence, ...extra}`.

    Subclasses set `status` and `code`; an answer to a domain error passes them."""

    status = 400
    code = "bad_request"
    # The limit (http/limits.py) this error enforces, counted when it is answered.
    limit: str | None = None

    def __init__(
        self,
        detail: str,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        status: int | None = None,
        code: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers
        self.extra = extra
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def body(self) -> bytes:
        return orjson.dumps({"error": self.code, "detail": self.detail, **self.extra})


class BadRequest(ApiError):
    """Malformed HTTP: the connection is closed after the answer."""


class InvalidJson(ApiError):
    code = "invalid_json"


class InvalidBody(ApiError):
    code = "invalid_body"


class InvalidParameter(ApiError):
    code = "invalid_parameter"


class InvalidCursor(ApiError):
    code = "invalid_cursor"


class AboveServerLimit(ApiError):
    """A channel asked for more than the server keeps (`--message-ttl`, ...)."""

    code = "above_server_limit"


class InvalidIdempotencyKey(ApiError):
    code = "invalid_idempotency_key"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"


class TooManyChannels(ApiError):
    code = "too_many_channels"
    limit = "channels_per_request"


class RequestTimeout(ApiError):
    """A request head or body that did not arrive in time: the connection closes."""

    status = 408
    code = "request_timeout"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"
    limit = "body_bytes"


class MessageTooLarge(ApiError):
    status = 413
    code = "message_too_large"
    limit = "message_bytes"


class TooManySubscriptions(ApiError):
    status = 429
    code = "too_many_subscriptions"
    limit = "parked_per_client"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"
    limit = "publish_rate"


class HeadersTooLarge(ApiError):
    status = 431
    code = "headers_too_large"
    limit = "header_bytes"


class InternalError(ApiError):
    status = 500
    code = "internal_error"


class TooManyConnections(ApiError):
    """Past --max-connections: answered as the connection opens, then closed."""

    status = 503
    code = "too_many_connections"
    limit = "connections"


# -- answers to the domain errors ----------------------------------------------------


def answer(exc: BaseException) -> ApiError | None:
    """The API's answer to a domain error raised by the hub or an engine; None for
    anything else (an unexpected failure, which the caller logs)."""
    if isinstance(exc, ChannelsNotFound):
        return ApiError(
            "unknown, expired or closed channels: " + ", ".join(map(str, exc.refs)),
            status=404,
            code="channel_not_found",
            channels=exc.refs,
        )
    if isinstance(exc, SystemChannel):
        return ApiError(
            "these are the server's own channels (channel events are read at "
            "GET /subscribe/events with the publisher key): " + ", ".join(map(str, exc.refs)),
            status=403,
            code="forbidden",
            channels=exc.refs,
        )
    if isinstance(exc, NotAllowed):
        return ApiError(
            "this publisher key may not use these channels (outside its name prefixes, "
            "or unnamed and made by another key): " + ", ".join(map(str, exc.refs)),
            status=403,
            code="forbidden",
            channels=exc.refs,
        )
    if isinstance(exc, NameTaken):
        return ApiError(
            f"a live channel is already named {exc.name!r}", status=409, code="name_taken"
        )
    if isinstance(exc, IdempotencyKeyReused):
        return ApiError(
            "this Idempotency-Key went with another request within the idempotency window: "
            "nothing was stored; use a new key for a new publication",
            status=422,
            code="idempotency_key_reused",
        )
    if isinstance(exc, StorageFull):
        # The operator's problem, not the client's: the client only learns to wait.
        return store_unreachable("the server's disk is full: nothing was stored; retry later")
    if isinstance(exc, NotReplicated):
        # Unlike other 503s, something was done: the client must know a retry may
        # store it twice (unless it carries the same Idempotency-Key).
        return store_unreachable(
            "stored, but not yet confirmed by the store's replicas: it may be lost if "
            "the store fails over, and retrying without an Idempotency-Key may store it twice"
        )
    if isinstance(exc, EngineUnavailable):
        # Its own sentence names the store's internals: it is logged, never sent.
        return store_unreachable("the message store is unreachable; retry shortly")
    return None


def store_unreachable(detail: str, **extra: Any) -> ApiError:
    """503 `engine_unavailable`: the engine's store is out of reach, nothing was done;
    retry soon, here or on another node."""
    return ApiError(detail, status=503, code="engine_unavailable", headers=RETRY_SOON, **extra)

"""API errors: each knows its status, machine code and human sentence."""

from __future__ import annotations

from typing import Any

import orjson


class ApiError(Exception):
    """An error answered as `{"error": code, "detail": sentence, ...extra}`."""

    status = 400
    code = "bad_request"
    # The limit (http/limits.py) this error enforces, counted when it is answered.
    limit: str | None = None

    def __init__(
        self, detail: str, *, headers: tuple[tuple[str, str], ...] = (), **extra: Any
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers
        self.extra = extra

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


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class ChannelNotFound(ApiError):
    status = 404
    code = "channel_not_found"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"


class NameTakenError(ApiError):
    status = 409
    code = "name_taken"


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


class EngineUnavailableError(ApiError):
    """The shared store is out of reach: retry soon, nothing was done."""

    status = 503
    code = "engine_unavailable"

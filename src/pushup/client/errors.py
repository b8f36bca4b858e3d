"""What the client raises: one exception class per error the server can answer, and one
for no answer at all, so callers catch `ChannelNotFound` rather than parse bodies."""

from __future__ import annotations

from typing import Any


class PushUpError(Exception):
    """Anything this client raises on purpose."""


class TransportError(PushUpError):
    """No answer: the server could not be reached, or the connection failed or timed out.

    The request may or may not have been carried out (a publication may have been
    made); the `httpx` error is the `__cause__`."""


class ApiError(PushUpError):
    """The server answered with an error status: its HTTP status, machine code and
    sentence, plus the whole JSON body (some errors add fields)."""

    def __init__(self, status: int, code: str, detail: str, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.body = body


class InvalidRequest(ApiError):
    """400: the request was malformed (`invalid_body`, `invalid_parameter`,
    `invalid_cursor`, `invalid_json`, `bad_request`), or asked a channel to keep more
    than the server does (`above_server_limit`): retrying will not help."""


class Unauthorized(ApiError):
    """401: the publisher key is missing or wrong, or the subscriber token is
    (`token_expired`: it has expired)."""


class Forbidden(ApiError):
    """403: a publisher request without a key from a non-loopback or proxied peer, a
    publisher key's request for channels that are not its own (`--publisher-keys`), or a
    subscription to channels its token does not grant (`channels` in `body`)."""


class NotFound(ApiError):
    """404: unknown path, e.g. a base URL that is not a PushUp server."""


class ChannelNotFound(NotFound):
    """404: channels unknown, expired or closed; `channels` lists them as given."""

    @property
    def channels(self) -> list[int | str]:
        channels: list[int | str] = self.body.get("channels", [])
        return channels


class MethodNotAllowed(ApiError):
    """405: the path exists with other methods."""


class NameTaken(ApiError):
    """409: a live channel already has this name."""


class ChannelClosed(ApiError):
    """410: a channel of a subscription was closed or expired; `channels` lists them, as
    ids."""

    @property
    def channels(self) -> list[int]:
        channels: list[int] = self.body.get("channels", [])
        return channels


class IdempotencyKeyReused(ApiError):
    """422: the publication's `Idempotency-Key` went with another request within the
    server's idempotency window; nothing was stored."""


class PayloadTooLarge(ApiError):
    """413: the request body is over the server's limit (1 MiB)."""


class HeadersTooLarge(ApiError):
    """431: the request line and headers are over the server's limit."""


class ServerError(ApiError):
    """5xx: a fault on the server side (or a proxy in front of it); may pass."""


class RetryLater(ApiError):
    """An answer that says when to try again: `retry_after` seconds (from
    `Retry-After`, None if absent)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        body: dict[str, Any],
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, detail, body)
        self.retry_after = retry_after


class ServiceUnavailable(ServerError, RetryLater):
    """503: the server's message store is out of reach (or its connections are all
    taken) and nothing was done; try again after `retry_after` seconds."""


class TooManyRequests(RetryLater):
    """429: a limit of the server (`rate_limited`: publications per second for this key
    or address; `too_many_subscriptions`: parked polls for this address); try again
    after `retry_after` seconds."""


# The server's machine codes, then the status alone for answers from something else
# (a proxy's 502, a plain-text 404).
BY_CODE: dict[str, type[ApiError]] = {
    "bad_request": InvalidRequest,
    "invalid_json": InvalidRequest,
    "invalid_body": InvalidRequest,
    "invalid_parameter": InvalidRequest,
    "invalid_cursor": InvalidRequest,
    "above_server_limit": InvalidRequest,
    "invalid_idempotency_key": InvalidRequest,
    "idempotency_key_reused": IdempotencyKeyReused,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "channel_not_found": ChannelNotFound,
    "method_not_allowed": MethodNotAllowed,
    "name_taken": NameTaken,
    "channel_closed": ChannelClosed,
    "payload_too_large": PayloadTooLarge,
    "headers_too_large": HeadersTooLarge,
    "internal_error": ServerError,
    "engine_unavailable": ServiceUnavailable,
    "token_expired": Unauthorized,
    "too_many_channels": InvalidRequest,
    "message_too_large": PayloadTooLarge,
    "rate_limited": TooManyRequests,
    "too_many_subscriptions": TooManyRequests,
    "too_many_connections": ServiceUnavailable,
}

BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: NameTaken,
    410: ChannelClosed,
    413: PayloadTooLarge,
    422: IdempotencyKeyReused,
    429: TooManyRequests,
    431: HeadersTooLarge,
    503: ServiceUnavailable,
}

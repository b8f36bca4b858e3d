"""How an error answer becomes an exception, for answers a test server does not give on
demand: a 403, and answers from something other than PushUp (a proxy's 502 page)."""

from __future__ import annotations

import httpx
import pytest

from pushup.client import (
    ApiError,
    ChannelClosed,
    Forbidden,
    HeadersTooLarge,
    MethodNotAllowed,
    ServerError,
    ServiceUnavailable,
)
from pushup.client.wire import error_from


def answer(status: int, content: bytes, **headers: str) -> httpx.Response:
    return httpx.Response(status, content=content, headers=headers)


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (403, "forbidden", Forbidden),
        (405, "method_not_allowed", MethodNotAllowed),
        (431, "headers_too_large", HeadersTooLarge),
        (500, "internal_error", ServerError),
    ],
)
def test_the_servers_codes(status: int, code: str, cls: type[ApiError]) -> None:
    error = error_from(answer(status, b'{"error": "%s", "detail": "why"}' % code.encode()))
    assert type(error) is cls
    assert (error.status, error.code, error.detail) == (status, code, "why")
    assert str(error) == f"{status} {code}: why"


def test_extra_fields_are_kept() -> None:
    body = b'{"error": "channel_closed", "detail": "closed", "channels": [17]}'
    error = error_from(answer(410, body))
    assert isinstance(error, ChannelClosed)
    assert error.channels == [17]
    assert error.body["channels"] == [17]


def test_a_proxys_page_is_mapped_by_status() -> None:
    error = error_from(answer(502, b"<html><h1>502 Bad Gateway</h1></html>"))
    assert type(error) is ServerError
    assert (error.status, error.code) == (502, "http_502")
    assert "Bad Gateway" in error.detail

    busy = error_from(answer(503, b"", **{"Retry-After": "7"}))
    assert isinstance(busy, ServiceUnavailable)
    assert (busy.code, busy.detail, busy.retry_after) == ("http_503", "Service Unavailable", 7.0)
    dated = error_from(answer(503, b"busy", **{"Retry-After": "Fri, 27 Nov 2026 12:00:00 GMT"}))
    assert isinstance(dated, ServiceUnavailable) and dated.retry_after is None

    teapot = error_from(answer(418, b'{"error": {"nested": 1}}'))
    assert (type(teapot), teapot.code) == (ApiError, "http_418")

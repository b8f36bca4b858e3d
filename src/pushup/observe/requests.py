"""Request ids: which request a log line or an error answer belongs to.

The connection marks the request it is handling in a context variable, which the
handler's later steps inherit (future callbacks and Tasks copy the context they were
created in). The id itself is made only when something needs it, a log line or an
error answer: a request that neither logs nor fails pays for setting the variable,
never for an id. A client's own `X-Request-Id` is kept when it is a sane token.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from contextvars import ContextVar

from pushup.observe import metrics
from pushup.observe.sources import AnsweredError, ObservedRequest

log = logging.getLogger("pushup.http")

HEADER = "X-Request-Id"
_KEY = "x-request-id"
_VALID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
# Unique enough across processes and restarts, and cheap: a random prefix and a count.
_PREFIX = secrets.token_hex(4)
_count = itertools.count(1)

current_request: ContextVar[ObservedRequest | None] = ContextVar("pushup_request", default=None)


def new_id() -> str:
    return f"{_PREFIX}-{next(_count):x}"


def request_id(request: ObservedRequest) -> str:
    """The request's id: its valid `X-Request-Id`, else one made now and kept on it."""
    given = request.headers.get(_KEY)
    if given is not None and _VALID.fullmatch(given):
        return given
    made = request.headers[_KEY] = new_id()
    return made


def current_id() -> str | None:
    """The id of the request being handled here, if any."""
    request = current_request.get()
    return None if request is None else request_id(request)


def answered_error(error: AnsweredError, *, in_request: bool = True) -> tuple[tuple[str, str], ...]:
    """An error is being answered: count it, log it, and give the headers it adds
    (`X-Request-Id`). `in_request=False` for errors found while parsing, before any
    request was handled: they get an id of their own."""
    request = current_request.get() if in_request else None
    method = "" if request is None else request.method
    metrics.count_error(error.code, expected=metrics.expected(error.code, method))
    key = None if request is None else request.publisher_name
    if key is not None:
        metrics.count_key_error(key, error.code)
    rid = new_id() if request is None else request_id(request)
    where = "" if request is None else f" to {request.method} {request.path}"
    fields: dict[str, object] = {"request_id": rid, "status": error.status, "code": error.code}
    if key is not None:
        # Its name only: a publisher key's secret is never logged.
        where += f" (publisher key {key})"
        fields["publisher_key"] = key
    # Failed publisher checks are worth an operator's attention (a wrong key, a proxy).
    # Server-side failures are logged where they happen (a 500 with its traceback, a
    # 502 or 504 by the proxy, an outage once by the engine); the rest are the
    # client's mistakes.
    # Subscribers' refusals (an expired token, a channel outside it) are routine.
    publisher_side = request is not None and not request.path.startswith("/subscribe")
    level = logging.WARNING if error.status in (401, 403) and publisher_side else logging.DEBUG
    if log.isEnabledFor(level):
        log.log(
            level,
            "answered %d %s%s: %s",
            error.status,
            error.code,
            where,
            error.detail,
            extra=fields,
        )
    return ((HEADER, rid),)

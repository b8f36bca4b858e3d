"""`GET /metrics` (Prometheus) and `GET /dashboard` (a live page), both behind the
publisher check, and for an admin key only when there are several (`--publisher-keys`),
as are the page's calls under `/dashboard/` (`http/dashboard.py`).

A browser cannot send the publisher key as a header, so `/dashboard` also takes it
once as `?key=`: the answer sets an HttpOnly cookie holding a token derived from the
key (good for the dashboard only, never the key itself) and redirects to the bare URL,
so the key leaves the address bar and the history.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from importlib import resources
from urllib.parse import parse_qs

import orjson

from pushup.core.tenants import PublisherKey, PublisherKeys
from pushup.http.request import Request
from pushup.http.response import Response
from pushup.http.services import Services
from pushup.observe import exposition, observer
from pushup.observe.metrics import DELIVERY_BUCKETS_S, EXPECTED_CODES

DASHBOARD_PATH = "/dashboard"
# What only admin keys may read: every tenant's figures, and every tenant's channels
# (the dashboard's calls, under DASHBOARD_PATH + "/").
ADMIN_PATHS = frozenset(("/metrics", DASHBOARD_PATH))
COOKIE = "pushup_dashboard"
_COOKIE_MAX_AGE_S = 7 * 24 * 3600
# The page loads nothing from elsewhere: its script and style are inline, its data
# comes from /pushup.js and /subscribe on this origin.
_PAGE_HEADERS = (
    ("Content-Type", "text/html; charset=utf-8"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)


async def metrics(request: Request, services: Services) -> Response:
    body = exposition.render(observer.current().snapshots())
    return Response(200, body, (("Content-Type", exposition.CONTENT_TYPE),))


async def dashboard(request: Request, services: Services) -> Response:
    key = request.publisher
    if key is not None and "key" in _query(request):
        # Authorized by this key (the router checked it): trade it for the cookie.
        cookie = (
            f"{COOKIE}={cookie_token(key.secret.encode())}; Path={DASHBOARD_PATH}; "
            f"Max-Age={_COOKIE_MAX_AGE_S}; HttpOnly; SameSite=Strict"
        )
        return Response(303, b"", (("Location", DASHBOARD_PATH), ("Set-Cookie", cookie)))
    watched = observer.current()
    await watched.ensure_stats_channel()
    config = {
        "channel": watched.stats_channel,
        "node": watched.node,
        "workers": watched.dashboard_figures(),
        "delivery_bounds": DELIVERY_BUCKETS_S,
        "expected_errors": [*sorted(EXPECTED_CODES), "channel_not_found (GET)"],
    }
    # Inside a <script> element: no "</script>" may appear, so "<" is escaped.
    data = orjson.dumps(config).replace(b"<", b"\\u003c")
    return Response(200, _page().replace(b"{{CONFIG}}", data), _PAGE_HEADERS)


def admin_only(path: str) -> bool:
    """Whether only an admin key may call `path`."""
    return path in ADMIN_PATHS or path.startswith(DASHBOARD_PATH + "/")


def admitted(request: Request, keys: PublisherKeys) -> PublisherKey | None:
    """The key a request for the dashboard carries as `?key=`, or whose cookie it
    carries (set by `/dashboard?key=`; the page's calls under `/dashboard/` carry it
    too); the router asks when there is no Authorization. Every key is compared, in
    constant time."""
    path = request.path
    page = path == DASHBOARD_PATH
    if not page and not path.startswith(DASHBOARD_PATH + "/"):
        return None
    given = _query(request).get("key") if page else None
    if given is not None:
        return keys.match(given[-1].encode())
    token = _cookie(request)
    if token is None:
        return None
    found = None
    for key in keys.keys:
        if hmac.compare_digest(token.encode(), cookie_token(key.secret.encode()).encode()):
            found = key
    return found


def cookie_token(key: bytes) -> str:
    """What the cookie holds: derived from the key, useless as a publisher key."""
    return hmac.new(key, b"pushup dashboard", hashlib.sha256).hexdigest()


def _query(request: Request) -> dict[str, list[str]]:
    return parse_qs(request.query, keep_blank_values=True)


def _cookie(request: Request) -> str | None:
    for part in (request.header("cookie") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None


@functools.cache
def _page() -> bytes:
    return resources.files("pushup").joinpath("static/dashboard.html").read_bytes()

"""The start-up banner: once a server serves, what a new user needs to know about it.

One log record, logged by the single server or by the supervisor of `--workers` (not
by each worker): its message says where it listens, its facts (see
`pushup.observe.logs`) where to look and how it is set up, one line each in text logs,
one field each in JSON logs.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from pushup import build
from pushup.config import Settings
from pushup.engine_urls import MEMORY_SCHEMES, NATS_SCHEMES, shown_url
from pushup.observe.logs import FACTS


def url(host: str, port: int) -> str:
    """The server's base URL, as a browser or curl takes it."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def log(
    logger: logging.Logger,
    headline: str,
    settings: Settings,
    base: str,
    *,
    engine: str | None = None,
    data: str | None = None,
) -> None:
    """Log `headline` with the facts of a server on `base` run with `settings`;
    `engine` and `data` say more of an engine than its URL does."""
    found = facts(settings, base)
    if engine is not None:
        found["engine"] = engine
    if data is not None:
        found["data_dir"] = data
    logger.info("%s", headline, extra={FACTS: found})


def facts(settings: Settings, base: str) -> dict[str, Any]:
    """Where to look, then how the server is set up, by name, in the order shown."""
    scheme = urlsplit(settings.engine_url).scheme
    embedded = scheme in MEMORY_SCHEMES
    if scheme in NATS_SCHEMES:
        data = "kept by NATS JetStream"
    elif not embedded:
        data = "kept by Redis"
    elif settings.data_dir is None:
        data = "none: nothing kept across restarts"
    else:
        data = str(settings.data_dir.resolve())
    return {
        "url": base,
        # In front of a web app, `/` is the app's page.
        "home": f"{base}/" + ("" if settings.upstream_url is None else " (the upstream's page)"),
        "dashboard": f"{base}/dashboard",
        "docs": f"{base}/openapi.yaml",
        "health": f"{base}/health",
        "metrics": f"{base}/metrics",
        "engine": "memory (in this process)" if embedded else shown_url(settings.engine_url),
        "data_dir": data,
        "publishers": _publishers(settings),
        "subscribers": (
            "anyone"
            if settings.subscriber_secret is None
            else "with a token signed by --subscriber-secret"
        ),
        "cors": ", ".join(settings.cors_origins) or "none: same-origin pages only",
        "upstream": settings.upstream_url or "none: other paths get 404",
        "workers": settings.workers,
        "build": _build(),
        "limits": _limits(settings),
        "cache": _cache(settings),
    }


def _publishers(settings: Settings) -> str:
    keys = settings.publisher_keys
    if keys is not None:
        # Names only: a secret is never shown.
        return f"with {len(keys.keys)} keys from {keys.source} (--publisher-keys): " + ", ".join(
            keys.names
        )
    if settings.publisher_key is None:
        return "loopback only (no --publisher-key)"
    return "with the bearer key (--publisher-key)"


def _build() -> str:
    stale = build.stale()
    if not stale:
        return build.kind()
    return (
        f"{build.kind()}, but OLDER than its source ({', '.join(stale)}): "
        "run `make compiled` again, or `make pure`"
    )


def _limits(settings: Settings) -> str:
    parked = settings.max_parked_per_ip or "no limit of"
    rate = settings.publish_rate
    return (
        f"{settings.max_connections} connections per worker, {parked} polls per client, "
        f"{_seconds(settings.max_timeout_s)} longest poll, "
        f"{_size(settings.max_body_bytes)} bodies, {_size(settings.max_message_bytes)} messages, "
        + (f"{rate:g} messages/s per publisher" if rate else "no publish rate limit")
    )


def _cache(settings: Settings) -> str:
    return (
        f"messages kept {_seconds(settings.message_ttl_s)}, "
        f"{settings.max_messages} per channel, {_size(settings.max_cache_bytes)} in all; "
        f"channels expire after {_seconds(settings.channel_ttl_s)} idle"
    )


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _size(count: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= factor and count % factor == 0:
            return f"{count // factor} {unit}"
    return f"{count} bytes"

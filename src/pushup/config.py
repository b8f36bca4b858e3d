"""Settings: every tunable in one frozen, checked object, built once by the CLI.

Each field is declared once, with its help, group and check (`pushup.options.option`):
the `pushup serve` flags, their `PUSHUP_*` variables and the grouped help come from it.
Errors are phrased to follow a name, so the same check reads `port must be ...` from
Python and `--port must be ...` or `PUSHUP_PORT must be ...` from the command line.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pushup.core.tenants import PublisherKeys, single_key
from pushup.engine_urls import check_engine_url
from pushup.options import (
    SettingError,
    at_least,
    between,
    build,
    none_if_empty,
    not_empty,
    not_negative,
    option,
    seconds,
    validate,
)
from pushup.publisher_keys import check_keys, load_keys

# The embedded engine's data directory, under the working directory; `none` keeps nothing.
DEFAULT_DATA_DIR = "pushup-data"
NO_DATA_DIR = "none"
# One label of a host name; `_` too, as container names (redis_1) have it.
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def check_host(host: str) -> None:
    """An IP address or a host name. Dotted numbers that are no address (999.1.1.1)
    would be looked up as a name, and fail only at start-up, less clearly."""
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    if (
        len(host) > 253
        or all(label.isdigit() for label in labels)
        or not all(_HOST_LABEL.fullmatch(label) for label in labels)
    ):
        raise ValueError(f"must be an IP address or a host name, not {host!r}")


def seconds_or_off(value: float) -> None:
    """A duration that 0 turns off."""
    if not (0 <= value <= 1e9):  # also false for NaN
        raise ValueError("must be 0 (off) or a positive number of seconds, at most 1e9")


def parse_data_dir(value: str) -> Path | None:
    """A `--data-dir` value: a directory, or None for `none` (no persistence)."""
    if value.strip().lower() == NO_DATA_DIR:
        return None
    if not value.strip():
        raise ValueError(f"must name a directory, or be {NO_DATA_DIR} to keep nothing")
    return Path(value)


def check_upstream_url(url: str) -> None:
    """Reject an upstream URL that names no web app to pass requests to."""
    usage = "must be http://host:port (or https://), optionally with a path prefix"
    try:
        parts = urlsplit(url)
        _port = parts.port  # raises ValueError unless a number in range
    except ValueError:
        raise ValueError(f"{usage}, not {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{usage}, not {url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{usage}: no query, fragment or credentials, not {url!r}")


def parse_cors_origins(value: str) -> tuple[str, ...]:
    """A `--cors-origins` value: comma-separated origins, `*` for any, empty for none."""
    origins = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    check_cors_origins(origins)
    return origins


def check_cors_origins(origins: tuple[str, ...]) -> None:
    """Either `*` alone or origins as browsers send them: scheme://host[:port], lower
    case, no path, no default port; anything else would never match and fail silently."""
    if "*" in origins and len(origins) > 1:
        raise ValueError("must be either * or a list of origins, not both")
    for origin in origins:
        if origin != "*" and not _is_origin(origin):
            raise ValueError(
                f"must list origins as browsers send them, scheme://host[:port], not {origin!r}"
            )


def _is_origin(origin: str) -> bool:
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    return not (
        not parts.scheme
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
        or origin != origin.lower()
        or (parts.scheme, port) in (("http", 80), ("https", 443))
    )


def _rate(value: float) -> None:
    if not (0 <= value <= 1e9):  # also false for NaN
        raise ValueError("must be a number of messages a second up to 1e9, 0 for none")


def _hs256_secret(value: str) -> None:
    # RFC 7518 §3.2: an HS256 key has at least the hash's 256 bits.
    if len(value.encode()) < 32:
        raise ValueError("must be at least 32 bytes long")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every `pushup serve` option, one field each (see `pushup.options`), checked once."""

    # -- server ------------------------------------------------------------------------
    host: str = option(
        "127.0.0.1", "Address to listen on.", group="server", check=check_host, metavar="HOST"
    )
    port: int = option(
        7070, "Port to listen on.", group="server", check=between(0, 65535), metavar="PORT"
    )
    # Shared by every worker of `--workers N`.
    fd: int | None = option(
        None,
        "Serve on this bound, listening socket instead of host:port.",
        group="server",
        check=not_negative,
        metavar="FD",
    )
    keepalive_timeout_s: float = option(
        75.0, "Seconds an idle keep-alive connection stays open.", group="server", check=seconds
    )
    ping_interval_s: float = option(
        20.0,
        "Seconds between stream pings; a WebSocket answering none of two is closed.",
        group="server",
        check=seconds,
    )
    # Off by default: each event is one more publication (a write to the journal or the
    # shared store) per channel created, closed or expired.
    channel_events: bool = option(
        False,
        "Publish channel events (created, closed, expired) to $events for the app.",
        group="server",
    )
    # Parked polls are answered at once with their cursor; the rest may finish.
    shutdown_timeout_s: float = option(
        10.0,
        "Seconds a stop (SIGTERM) waits for requests in flight.",
        group="server",
        check=seconds,
    )
    # None: requests PushUp does not answer itself get 404.
    upstream_url: str | None = option(
        None,
        "The web app (http://host:port) that gets requests PushUp does not answer.",
        group="server",
        name="upstream",
        parse=none_if_empty,
        check=check_upstream_url,
        metavar="URL",
    )
    upstream_connect_timeout_s: float = option(
        5.0, "Seconds to connect to the upstream; then 504.", group="server", check=seconds
    )
    # Past it a response already begun is cut short.
    upstream_timeout_s: float = option(
        60.0,
        "Seconds to wait for the upstream's answer or its next body read; then 504.",
        group="server",
        check=seconds,
    )
    # -- cache -------------------------------------------------------------------------
    message_ttl_s: float = option(
        300.0, "Seconds a published message stays cached.", group="cache", check=seconds
    )
    max_messages: int = option(
        1000, "Messages cached per channel; the oldest go first.", group="cache", check=at_least(1)
    )
    channel_ttl_s: float = option(
        3600.0, "Seconds without activity before a channel expires.", group="cache", check=seconds
    )
    # Subscribers that miss dropped messages see `gap: true`.
    max_cache_bytes: int = option(
        256 * 1024 * 1024,
        "Bytes of message data cached over all channels; the oldest go first.",
        group="cache",
        check=at_least(1024),
    )
    # A retry of a publication with the same Idempotency-Key within it gets the first
    # answer again; kept by the engine (its journal, Redis, the NATS stream).
    idempotency_window_s: float = option(
        300.0,
        "Seconds a publication's first answer is kept for its Idempotency-Key; 0: off.",
        group="cache",
        check=seconds_or_off,
    )
    # Locked: one server per directory. None: memory only. Redis keeps its data itself;
    # the private nats-server of --workers keeps its store in <data_dir>/nats.
    data_dir: Path | None = option(  # noqa: RUF009 (option() is a dataclasses.field)
        Path(DEFAULT_DATA_DIR),
        f"Where the embedded engine or the workers' nats-server keep data; {NO_DATA_DIR}: nowhere.",
        group="cache",
        parse=parse_data_dir,
        metavar="DIR",
    )
    # -- limits (http/limits.py): what one client may hold or send ---------------------
    max_timeout_s: float = option(
        300.0, "Longest poll timeout a subscriber may ask for.", group="limits", check=seconds
    )
    # Per process, below the open-files limit (20,000 here).
    max_connections: int = option(
        18_000,
        "Open connections per worker; past it a new one gets 503 and is closed.",
        group="limits",
        check=at_least(1),
    )
    # Loopback peers (a proxy on this host) are not limited, unless trust_forwarded_for.
    max_parked_per_ip: int = option(
        1000,
        "Polls and streams held per client address and worker (429); 0: no limit.",
        group="limits",
        check=not_negative,
    )
    trust_forwarded_for: bool = option(
        False,
        "Count a proxy's clients on loopback by their X-Forwarded-For address.",
        group="limits",
    )
    header_timeout_s: float = option(
        10.0,
        "Seconds to receive a request's line and headers once begun; then 408.",
        group="limits",
        check=seconds,
    )
    body_timeout_s: float = option(
        30.0,
        "Seconds to receive a request's body once its headers are in; then 408.",
        group="limits",
        check=seconds,
    )
    max_header_bytes: int = option(
        64 * 1024,
        "Bytes of a request's line and headers; past it 431.",
        group="limits",
        check=at_least(1024),
    )
    max_body_bytes: int = option(
        1024 * 1024, "Bytes of a request body; past it 413.", group="limits", check=at_least(1024)
    )
    max_message_bytes: int = option(
        1024 * 1024,
        "Bytes of one message's data as JSON; past it 413.",
        group="limits",
        check=at_least(1),
    )
    max_channels_per_request: int = option(
        100,
        "Channels one poll, stream or publication may name; past it 400.",
        group="limits",
        check=at_least(1),
    )
    publish_rate: float = option(
        0.0,
        "Messages a second per publisher key, else address (429); 0: no limit.",
        group="limits",
        check=_rate,
    )
    publish_burst: int = option(
        0,
        "Messages at once above --publish-rate; 0: one second's worth.",
        group="limits",
        check=not_negative,
    )
    # -- security (http/tokens.py, http/cors.py) ----------------------------------------
    publisher_key: str | None = option(
        None,
        "Bearer key publishers must send; without it only loopback may publish.",
        group="security",
        check=not_empty,
        metavar="KEY",
    )
    # Read once, here: the workers get the keys, not the file.
    publisher_keys: PublisherKeys | None = option(  # noqa: RUF009 (a dataclasses.field)
        None,
        "TOML file of publisher keys, each allowed some channel-name prefixes.",
        group="security",
        parse=load_keys,
        check=check_keys,
        metavar="FILE",
    )
    # Other local users can read a flag, but not the variable, in the process list.
    # None: subscribers need no token.
    subscriber_secret: str | None = option(
        None,
        "HS256 secret (32+ bytes) of subscribers' JWTs; safer as the variable.",
        group="security",
        parse=none_if_empty,
        check=_hs256_secret,
        metavar="SECRET",
    )
    # ("*",): any origin; (): no CORS headers at all.
    cors_origins: tuple[str, ...] = option(
        (),
        "Origins (https://app.example,...) or * whose pages may read polls/streams.",
        group="security",
        parse=parse_cors_origins,
        check=check_cors_origins,
        metavar="ORIGINS",
    )
    # -- cluster -----------------------------------------------------------------------
    engine_url: str = option(
        "memory://",
        "Where channels and messages live: memory://, redis://, redis+sentinel:// or nats://.",
        group="cluster",
        name="engine",
        check=check_engine_url,
        metavar="URL",
    )
    # On one port (SO_REUSEPORT). The embedded engine lives in one process: above 1
    # without --engine, the workers share a private nats-server (pushup.localnats).
    workers: int = option(
        1,
        "Worker processes sharing the port; without --engine they share a private nats-server.",
        group="cluster",
        check=at_least(1),
    )
    # -- logging (observe/logs.py) -----------------------------------------------------
    log_level: str = option(
        "info",
        "debug, info, warning or error.",
        group="logging",
        choices=("debug", "info", "warning", "error"),
        metavar="LEVEL",
    )
    # JSON: time, level, logger, message, pid, worker, request_id and extra fields.
    log_format: str = option(
        "text",
        "text, or json: one object per line.",
        group="logging",
        choices=("text", "json"),
        metavar="FORMAT",
    )

    def __post_init__(self) -> None:
        validate(self)
        if self.publisher_key is not None and self.publisher_keys is not None:
            raise SettingError(
                "publisher_keys",
                "and --publisher-key cannot be used together: put that key in the file, "
                'with prefixes = [""] to allow it every channel',
            )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], flags: Mapping[str, Any] | None = None
    ) -> Settings:
        """Settings from `flags` (by field; None when not given), else the `PUSHUP_*`
        variables in `environ`, else the defaults; OptionError names a bad flag or
        variable as the user wrote it."""
        return build(cls, environ, flags or {})

    @property
    def keys(self) -> PublisherKeys | None:
        """The publisher keys, or None when publishing is open to loopback clients:
        `--publisher-key` is one key allowed everything."""
        if self.publisher_key is not None:
            return PublisherKeys((single_key(self.publisher_key),))
        return self.publisher_keys

    @property
    def default_timeout_s(self) -> float:
        """The poll timeout when a request gives none: 50 s, as common long polls use."""
        return min(50.0, self.max_timeout_s)

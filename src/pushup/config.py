"""Settings: every tunable in one frozen, checked object, built once by the CLI."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

# Engines by URL scheme: the embedded one, or Redis shared by several nodes.
MEMORY_SCHEMES = ("memory",)
REDIS_SCHEMES = ("redis", "rediss", "unix")
# The embedded engine's data directory, under the working directory; `none` keeps nothing.
DEFAULT_DATA_DIR = "pushup-data"
NO_DATA_DIR = "none"


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 7070
    message_ttl_s: float = 300.0
    max_messages: int = 1000
    channel_ttl_s: float = 3600.0
    max_timeout_s: float = 300.0
    publisher_key: str | None = None
    keepalive_timeout_s: float = 75.0
    # Seconds between keep-alive pings on SSE and WebSocket streams.
    ping_interval_s: float = 20.0
    max_body_bytes: int = 1024 * 1024
    max_header_bytes: int = 64 * 1024
    # An already bound, listening socket to serve on instead of host:port.
    fd: int | None = None
    log_level: str = "info"
    # Where channels and messages live: `memory://` (this process) or
    # `redis://host:port/db` (shared by every node on that Redis).
    engine_url: str = "memory://"
    # Where the embedded engine journals channels and messages so that a restart loses
    # nothing (None: memory only). Unused with Redis, which keeps them itself.
    data_dir: Path | None = Path(DEFAULT_DATA_DIR)
    # Worker processes on one port (SO_REUSEPORT); above 1 needs a shared engine.
    workers: int = 1
    # The web app behind PushUp (`http://host:port`): every request PushUp does not
    # answer itself is passed on to it (reverse-proxy mode). None: answered 404.
    upstream_url: str | None = None
    upstream_connect_timeout_s: float = 5.0
    # Longest wait for the upstream's answer, and between two reads of its body.
    upstream_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        _positive("message_ttl", self.message_ttl_s)
        _positive("channel_ttl", self.channel_ttl_s)
        _positive("max_timeout", self.max_timeout_s)
        _positive("keepalive_timeout", self.keepalive_timeout_s)
        _positive("ping_interval", self.ping_interval_s)
        if self.max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be between 0 and 65535")
        if self.publisher_key == "":
            raise ValueError("publisher_key must not be empty")
        check_engine_url(self.engine_url)
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.upstream_url is not None:
            check_upstream_url(self.upstream_url)
        _positive("upstream_connect_timeout", self.upstream_connect_timeout_s)
        _positive("upstream_timeout", self.upstream_timeout_s)
        if self.workers > 1 and urlsplit(self.engine_url).scheme in MEMORY_SCHEMES:
            raise ValueError(
                "workers above 1 need a shared engine: the embedded engine keeps channels "
                "and messages inside one process; use --engine redis://host:port/db"
            )

    @property
    def default_timeout_s(self) -> float:
        """The poll timeout when a request gives none: 50 s, as common long polls use."""
        return min(50.0, self.max_timeout_s)


def _positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive number of seconds")


def parse_data_dir(value: str) -> Path | None:
    """A `--data-dir` value: a directory, or None for `none` (no persistence)."""
    if value.strip().lower() == NO_DATA_DIR:
        return None
    if not value.strip():
        raise ValueError(f"data_dir must name a directory, or be {NO_DATA_DIR} to keep nothing")
    return Path(value)


def check_engine_url(url: str) -> None:
    """Reject an engine URL no engine takes, naming what would be accepted."""
    usage = "engine must be memory:// or redis://host:port/db"
    try:
        parts = urlsplit(url)
        _port = parts.port  # raises ValueError unless a number in range
    except ValueError:
        raise ValueError(f"{usage}, not {url!r}") from None
    scheme = parts.scheme
    if scheme in MEMORY_SCHEMES:
        if parts.netloc or parts.path or parts.query:
            raise ValueError(f"{usage}: memory:// takes no host, path or options")
        return
    if scheme not in REDIS_SCHEMES:
        raise ValueError(f"{usage}, not {url!r}")
    if scheme == "unix":
        if not parts.path:
            raise ValueError(f"{usage}: unix:// needs a socket path")
        return
    if not parts.hostname:
        raise ValueError(f"{usage}: {url!r} names no host")
    db = parts.path.lstrip("/")
    if db and not (db.isascii() and db.isdigit()):
        raise ValueError(f"{usage}: the database in {url!r} must be a number")


def check_upstream_url(url: str) -> None:
    """Reject an upstream URL that names no web app to pass requests to."""
    usage = "upstream must be http://host:port (or https://), optionally with a path prefix"
    try:
        parts = urlsplit(url)
        _port = parts.port  # raises ValueError unless a number in range
    except ValueError:
        raise ValueError(f"{usage}, not {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{usage}, not {url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{usage}: no query, fragment or credentials, not {url!r}")

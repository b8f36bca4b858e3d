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
    # `text`, or `json`: one object per line (observe/logs.py).
    log_format: str = "text"
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
    # -- limits (http/limits.py): what one client may hold or send ---------------------
    # Open connections per process, below the open-files limit (20,000 here); past it a
    # new connection is answered 503 and closed.
    max_connections: int = 18_000
    # Parked polls and open streams per client address (0: no limit); loopback peers
    # (a proxy on this host) are not limited unless `trust_forwarded_for`.
    max_parked_per_ip: int = 1000
    # Count a loopback proxy's clients by the last X-Forwarded-For entry.
    trust_forwarded_for: bool = False
    # Seconds to receive a request head once it began, and its body once the head is in.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    # Bytes of one message's JSON data, and channels named by one request.
    max_message_bytes: int = 1024 * 1024
    max_channels_per_request: int = 100
    # Messages a second per publisher (its key, else its address); 0: no limit. The
    # burst is how many may come at once (0: one second's worth).
    publish_rate: float = 0.0
    publish_burst: int = 0
    # Bytes of message data the cache holds over all channels; the oldest go first.
    max_cache_bytes: int = 256 * 1024 * 1024
    # -- access and shutdown (http/tokens.py, http/cors.py, http/shutdown.py) ----------
    # The HS256 secret subscriber tokens are signed with; None: subscribers need none.
    subscriber_secret: str | None = None
    # Web origins (`https://app.example`) whose pages may read subscriber answers;
    # ("*",): any; (): no CORS headers at all.
    cors_origins: tuple[str, ...] = ()
    # Seconds a stop (SIGTERM) waits for requests in flight before closing what remains.
    shutdown_timeout_s: float = 10.0

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
        if self.log_format not in ("text", "json"):
            raise ValueError("log_format must be text or json")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.upstream_url is not None:
            check_upstream_url(self.upstream_url)
        _positive("upstream_connect_timeout", self.upstream_connect_timeout_s)
        _positive("upstream_timeout", self.upstream_timeout_s)
        self._check_limits()
        self._check_access()
        if self.workers > 1 and urlsplit(self.engine_url).scheme in MEMORY_SCHEMES:
            raise ValueError(
                "workers above 1 need a shared engine: the embedded engine keeps channels "
                "and messages inside one process; use --engine redis://host:port/db"
            )

    def _check_limits(self) -> None:
        _positive("header_timeout", self.header_timeout_s)
        _positive("body_timeout", self.body_timeout_s)
        for name in ("max_connections", "max_message_bytes", "max_channels_per_request"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("max_body_bytes", "max_header_bytes", "max_cache_bytes"):
            if getattr(self, name) < 1024:
                raise ValueError(f"{name} must be at least 1024")
        if self.max_parked_per_ip < 0 or self.publish_burst < 0:
            raise ValueError("max_parked_per_ip and publish_burst must not be negative")
        if not (self.publish_rate >= 0 and math.isfinite(self.publish_rate)):
            raise ValueError("publish_rate must be a number of messages a second, 0 for none")

    def _check_access(self) -> None:
        if self.subscriber_secret is not None and len(self.subscriber_secret.encode()) < 32:
            # RFC 7518 §3.2: an HS256 key has at least the hash's 256 bits.
            raise ValueError("subscriber_secret must be at least 32 bytes long")
        for origin in self.cors_origins:
            check_origin(origin)
        _positive("shutdown_timeout", self.shutdown_timeout_s)

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


def parse_cors_origins(value: str) -> tuple[str, ...]:
    """A `--cors-origins` value: comma-separated origins, `*` for any, empty for none."""
    origins = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if "*" in origins and len(origins) > 1:
        raise ValueError("cors_origins is either * or a list of origins, not both")
    for origin in origins:
        check_origin(origin)
    return origins


def check_origin(origin: str) -> None:
    """An origin as browsers send it: scheme://host[:port], lower case, no path, no
    default port; anything else would never match and fail silently."""
    if origin == "*":
        return
    usage = f"a CORS origin is scheme://host[:port] as browsers send it, not {origin!r}"
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        raise ValueError(usage) from None
    if (
        not parts.scheme
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
        or origin != origin.lower()
        or (parts.scheme, port) in (("http", 80), ("https", 443))
    ):
        raise ValueError(usage)

"""Engine URLs: which schemes name which engine, what each must look like, and how to
show one without its passwords.

Kept free of any engine's imports: the settings check a URL here before an engine (and
its optional extra) is ever imported, and the Redis engine reads its Sentinel URL with
the same parser, so what is accepted and what is used cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

# Engines by URL scheme: the embedded one, or a store shared by several nodes.
MEMORY_SCHEMES = ("memory",)
REDIS_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEMES = ("redis+sentinel",)
NATS_SCHEMES = ("nats",)
# Every scheme the Redis engine takes: one Redis, or the master Sentinel names.
ALL_REDIS_SCHEMES = (*REDIS_SCHEMES, *SENTINEL_SCHEMES)

USAGE = (
    "must be memory://, redis://host:port/db, "
    "redis+sentinel://host:port[,host:port...]/service[/db] or nats://host:port[,host:port...]"
)
# Sentinel's own port, when a URL names a host alone.
SENTINEL_PORT = 26379
# A command to Redis times out after 5 s (a 503): waiting for replicas must end sooner.
MAX_WAIT_TIMEOUT_S = 4.0
_SENTINEL_OPTIONS = ("sentinel_password", "wait", "wait_timeout")
# The user (and password) of a URL's authority: what an unparsable URL is shown without.
_USERINFO = re.compile(r"(?<=://)[^/?#]*@")
_SERVICE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def check_engine_url(url: str) -> None:
    """Reject an engine URL no engine takes, naming what would be accepted."""
    try:
        scheme = urlsplit(url).scheme
    except ValueError:  # brackets that close no IPv6 address
        raise ValueError(f"{USAGE}, not {_shown(url)}") from None
    if scheme in NATS_SCHEMES:
        check_nats_url(url)
        return
    if scheme in SENTINEL_SCHEMES:
        try:
            SentinelUrl.parse(url)
        except ValueError as exc:
            raise ValueError(f"{USAGE}: {exc}") from None
        return
    try:
        parts = urlsplit(url)
        _port = parts.port  # raises ValueError unless a number in range
    except ValueError:
        raise ValueError(f"{USAGE}, not {_shown(url)}") from None
    if scheme in MEMORY_SCHEMES:
        if parts.netloc or parts.path or parts.query:
            raise ValueError(f"{USAGE}: memory:// takes no host, path or options")
        return
    if scheme not in REDIS_SCHEMES:
        raise ValueError(f"{USAGE}, not {_shown(url)}")
    if scheme == "unix":
        if not parts.path:
            raise ValueError(f"{USAGE}: unix:// needs a socket path")
        return
    if not parts.hostname:
        raise ValueError(f"{USAGE}: {_shown(url)} names no host")
    db = parts.path.lstrip("/")
    if db and not (db.isascii() and db.isdigit()):
        raise ValueError(f"{USAGE}: the database in {_shown(url)} must be a number")


def check_nats_url(url: str) -> None:
    """`nats://host:port[,host:port...]`, optionally `?stream=NAME&replicas=N`."""
    parts = urlsplit(url)
    hosts = parts.netloc.split(",")
    if not parts.netloc or not all(hosts):
        raise ValueError(f"{USAGE}: {_shown(url)} names no host")
    for host in hosts:
        host = host.rpartition("@")[2]
        name, colon, port = host.rpartition(":")
        if not colon or not name or not (port.isascii() and port.isdigit()):
            raise ValueError(f"{USAGE}: {host!r} in {_shown(url)} must be host:port")
        if not 0 < int(port) < 65536:
            raise ValueError(f"{USAGE}: the port of {host!r} is out of range")
    if parts.path not in ("", "/"):
        raise ValueError(f"{USAGE}: nats:// takes no path")
    options = dict(parse_qsl(parts.query))
    unknown = set(options) - {"stream", "replicas"}
    if unknown:
        raise ValueError(f"{USAGE}: unknown option {sorted(unknown)[0]!r} in {_shown(url)}")
    stream = options.get("stream", "PUSHUP")
    if not (stream.isascii() and stream.replace("_", "").replace("-", "").isalnum()):
        raise ValueError(f"{USAGE}: stream names are letters, digits, - and _")
    replicas = options.get("replicas", "1")
    if not (replicas.isdigit() and 1 <= int(replicas) <= 5):
        raise ValueError(f"{USAGE}: replicas must be 1 to 5")


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """What `redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]`
    names, with the options `sentinel_password`, `wait` and `wait_timeout`.

    The form of the Redis-Sentinel-Url package (`redis+sentinel://`), which Kombu's
    `sentinel://h:p;sentinel://h:p/db` cannot replace here: Kombu takes the master's
    name from a transport option, and one `--engine` value must say everything. The
    password in the authority is the master's (and its replicas'), as in `redis://`.
    """

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    # Replicas that must confirm a write before it is acknowledged (Redis WAIT), and
    # for how long they are waited for; 0: acknowledged once the master has it.
    wait_replicas: int = 0
    wait_timeout_s: float = 1.0

    @classmethod
    def parse(cls, url: str) -> SentinelUrl:
        """Raises ValueError saying what is wrong (without the URL: it may hold a
        password)."""
        parts = urlsplit(url)
        userinfo, at, hostlist = parts.netloc.rpartition("@")
        if not hostlist:
            raise ValueError("redis+sentinel:// names no Sentinel host")
        sentinels = tuple(_sentinel(item) for item in hostlist.split(","))
        username, colon, password = userinfo.partition(":") if at else ("", "", "")
        path = parts.path.split("/")[1:]
        if not path or not path[0]:
            raise ValueError("redis+sentinel:// needs the service (master) name as its path")
        service = unquote(path[0])
        if not set(service) <= _SERVICE_CHARS:
            raise ValueError(f"the service name {service!r} must be letters, digits, ., - or _")
        db = path[1] if len(path) > 1 else "0"
        if len(path) > 2 or not (db.isascii() and db.isdigit()):
            raise ValueError("after the service name comes only the database, a number")
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(options) - set(_SENTINEL_OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown option {unknown[0]!r}; redis+sentinel:// takes "
                + ", ".join(_SENTINEL_OPTIONS)
            )
        replicas = options.get("wait", "0")
        if not (replicas.isascii() and replicas.isdigit() and int(replicas) <= 16):
            raise ValueError("wait must be a number of replicas, 0 to 16")
        timeout = _wait_timeout(options.get("wait_timeout", "1"))
        return cls(
            sentinels=sentinels,
            service=service,
            db=int(db),
            username=unquote(username) or None,
            password=unquote(password) if colon else None,
            sentinel_password=options.get("sentinel_password") or None,
            wait_replicas=int(replicas),
            wait_timeout_s=timeout,
        )


def _sentinel(item: str) -> tuple[str, int]:
    """`host`, `host:port` or `[v6 address]:port`."""
    try:
        parts = urlsplit("//" + item.strip())
        port = parts.port
    except ValueError:
        raise ValueError(f"the Sentinel {item!r} must be host:port") from None
    if not parts.hostname or parts.username is not None or parts.path:
        raise ValueError(f"the Sentinel {item!r} must be host:port")
    if port == 0:
        raise ValueError(f"the port of the Sentinel {item!r} is out of range")
    return parts.hostname, SENTINEL_PORT if port is None else port


def _wait_timeout(text: str) -> float:
    try:
        timeout = float(text)
    except ValueError:
        timeout = -1.0
    if not 0.001 <= timeout <= MAX_WAIT_TIMEOUT_S:  # also false for NaN
        raise ValueError(f"wait_timeout must be seconds, 0.001 to {MAX_WAIT_TIMEOUT_S:g}")
    return timeout


def shown_url(url: str) -> str:
    """`url` without its passwords (in the authority, or as an option named
    `password` or `sentinel_password`), to log or show."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        netloc = (user + "@" if user else "") + netloc.rpartition("@")[2]
    query = parts.query
    if "password" in query:
        kept = [(k, v) for k, v in parse_qsl(query, True) if not k.endswith("password")]
        query = urlencode(kept)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # Not urlunsplit: it drops the empty authority of unix:///path.
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def _shown(url: str) -> str:
    """`url` as an error repeats it: quoted, without its passwords, even when it does
    not parse (then without anything before an `@` in its authority)."""
    try:
        return repr(shown_url(url))
    except ValueError:
        return repr(_USERINFO.sub("", url, count=1))

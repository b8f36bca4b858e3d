"""Engine URLs: which schemes name which engine, what each must look like, and how to
show one without its password.

Kept free of any engine's imports: the settings check a URL here before an engine (and
its optional extra) is ever imported.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

# Engines by URL scheme: the embedded one, or a store shared by several nodes.
MEMORY_SCHEMES = ("memory",)
REDIS_SCHEMES = ("redis", "rediss", "unix")
NATS_SCHEMES = ("nats",)

USAGE = "must be memory://, redis://host:port/db or nats://host:port[,host:port...]"


def check_engine_url(url: str) -> None:
    """Reject an engine URL no engine takes, naming what would be accepted."""
    if urlsplit(url).scheme in NATS_SCHEMES:
        check_nats_url(url)
        return
    try:
        parts = urlsplit(url)
        _port = parts.port  # raises ValueError unless a number in range
    except ValueError:
        raise ValueError(f"{USAGE}, not {url!r}") from None
    scheme = parts.scheme
    if scheme in MEMORY_SCHEMES:
        if parts.netloc or parts.path or parts.query:
            raise ValueError(f"{USAGE}: memory:// takes no host, path or options")
        return
    if scheme not in REDIS_SCHEMES:
        raise ValueError(f"{USAGE}, not {url!r}")
    if scheme == "unix":
        if not parts.path:
            raise ValueError(f"{USAGE}: unix:// needs a socket path")
        return
    if not parts.hostname:
        raise ValueError(f"{USAGE}: {url!r} names no host")
    db = parts.path.lstrip("/")
    if db and not (db.isascii() and db.isdigit()):
        raise ValueError(f"{USAGE}: the database in {url!r} must be a number")


def check_nats_url(url: str) -> None:
    """`nats://host:port[,host:port...]`, optionally `?stream=NAME&replicas=N`."""
    parts = urlsplit(url)
    hosts = parts.netloc.split(",")
    if not parts.netloc or not all(hosts):
        raise ValueError(f"{USAGE}: {url!r} names no host")
    for host in hosts:
        name, colon, port = host.rpartition("@")[2].rpartition(":")
        if not colon or not name or not (port.isascii() and port.isdigit()):
            raise ValueError(f"{USAGE}: {host!r} in {url!r} must be host:port")
        if not 0 < int(port) < 65536:
            raise ValueError(f"{USAGE}: the port of {host!r} is out of range")
    if parts.path not in ("", "/"):
        raise ValueError(f"{USAGE}: nats:// takes no path")
    options = dict(parse_qsl(parts.query))
    unknown = set(options) - {"stream", "replicas"}
    if unknown:
        raise ValueError(f"{USAGE}: unknown option {sorted(unknown)[0]!r} in {url!r}")
    stream = options.get("stream", "PUSHUP")
    if not (stream.isascii() and stream.replace("_", "").replace("-", "").isalnum()):
        raise ValueError(f"{USAGE}: stream names are letters, digits, - and _")
    replicas = options.get("replicas", "1")
    if not (replicas.isdigit() and 1 <= int(replicas) <= 5):
        raise ValueError(f"{USAGE}: replicas must be 1 to 5")


def shown_url(url: str) -> str:
    """`url` without its password (in the authority or as `?password=`), to log or show."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        netloc = (user + "@" if user else "") + netloc.rpartition("@")[2]
    query = parts.query
    if "password" in query:
        query = urlencode([(k, v) for k, v in parse_qsl(query) if k != "password"])
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # Not urlunsplit: it drops the empty authority of unix:///path.
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")

"""`pushup stages`: the CPU cost of each request path, stage by stage, in this process.

The benchmark (`pushup bench`) measures the server from outside, against Nchan; this
measures where the server's own time goes. It builds a real server (`App`, the embedded
engine without a journal, default limits and metrics), feeds requests as bytes into real
connections whose transports only count what is written, and times them with the event
loop running: no sockets, so what is left is exactly the server's Python. `--profile`
splits the time by stage with cProfile (parse, route, authorize and limits, validate,
hub and engine, fan-out, frame, write); docs/architecture.md keeps the budget it gives.
cProfile sees only interpreted functions: with the compiled build (`make compiled`) the
split is meaningless, and the output says which modules were compiled.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import pstats
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import click
import orjson

from pushup.app import App
from pushup.config import Settings
from pushup.http.protocol import HttpConnection

_HOST = b"Host: 127.0.0.1:7070\r\n"


class _CountingTransport:
    """Enough of an asyncio transport for a connection: writes are counted, not sent."""

    def __init__(self) -> None:
        self.written = 0
        self.last = b""

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.last = data

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.written += len(chunk)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None: ...

    def get_write_buffer_size(self) -> int:
        return 0


@dataclass
class Path:
    """One request path: a set-up, then `run(n)` doing n requests through it."""

    name: str
    what: str
    run: Callable[[int], None]


def _connection(app: App) -> tuple[HttpConnection, _CountingTransport]:
    conn = HttpConnection(app.http)
    transport = _CountingTransport()
    conn.connection_made(cast(asyncio.Transport, transport))
    return conn, transport


def _request(method: str, target: str, body: bytes = b"") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\n".encode() + _HOST
    if body:
        head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    return head + b"\r\n" + body


async def _paths(app: App) -> list[Path]:
    channel = (await app.hub.create_channel(None, "stages")).id
    idle_channel = (await app.hub.create_channel(None, "stages-idle")).id
    publisher, _ = _connection(app)
    publication = _request(
        "POST", "/publish", b'{"channels":[%d],"data":{"title":"Hello","n":1}}' % idle_channel
    )

    def publish(n: int) -> None:
        for _ in range(n):
            publisher.data_received(publication)

    # A re-poll: a subscriber that got its answer polls again with its cursor and parks;
    # each publication then answers it, so every round is one park and one delivery.
    subscribers = [_connection(app)[0] for _ in range(100)]
    to_all = _request("POST", "/publish", b'{"channels":[%d],"data":{"n":2}}' % channel)
    waker, acks = _connection(app)

    def cursor() -> str:
        waker.data_received(to_all)
        return orjson.loads(acks.last.partition(b"\r\n\r\n")[2])["id"]  # type: ignore[no-any-return]

    def polls(since: str) -> bytes:
        return _request("GET", f"/subscribe?channels={channel}&timeout=50&since={since}")

    first = polls(cursor())
    for conn in subscribers:
        conn.data_received(first)

    def repoll(n: int) -> None:
        for _ in range(max(1, n // len(subscribers))):
            poll = polls(cursor())  # answers every parked subscriber
            for conn in subscribers:
                conn.data_received(poll)

    return [
        Path("publish", "POST /publish to a channel nobody waits on", publish),
        Path(
            "repoll",
            "per subscriber of 100: its answer written, its poll with the cursor parked",
            repoll,
        ),
    ]


def measure(n: int, profile: bool) -> list[tuple[Path, float, pstats.Stats | None]]:
    """ns per request on each path (best of 5), and its profile if asked."""

    async def main() -> list[tuple[Path, float, pstats.Stats | None]]:
        app = App(Settings(data_dir=None, log_level="warning"))
        await app.hub.start()
        try:
            results = []
            for path in await _paths(app):
                path.run(n // 10)  # warm up
                gc.collect()
                best = float("inf")
                for _ in range(5):
                    started = time.perf_counter_ns()
                    path.run(n)
                    best = min(best, (time.perf_counter_ns() - started) / n)
                stats = None
                if profile:
                    profiler = cProfile.Profile()
                    profiler.runcall(path.run, n)
                    stats = pstats.Stats(profiler)
                results.append((path, best, stats))
            return results
        finally:
            await app.hub.close()

    return asyncio.run(main())


# Where a function's own time goes: the first rule its file or name matches. Built-in
# functions (orjson, len, a dict's get) count for the stage of whoever called them.
_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("authorize, limits", ("http/limits.py", "http/ratelimit.py", "http/tokens.py",
                           "http/cors.py", "_authorize_publisher", "_admit")),
    ("parse", ("http/reader.py", "http/request.py", "feed_data")),
    ("route", ("http/router.py",)),
    ("validate", ("http/params.py", "http/subscriber.py", "http/publisher.py")),
    ("engine", ("engines/", "sortedcontainers")),
    ("hub, fan-out", ("core/",)),
    ("frame", ("http/response.py", "http/errors.py")),
    ("observe", ("observe/",)),
    ("write", ("stages.py",)),
    ("connection", ("http/protocol.py", "http/eager.py", "http/server.py", "http/idle.py")),
)  # fmt: skip

_Func = tuple[str, int, str]


def _stage(func: _Func) -> str | None:
    filename, _, name = func
    if filename == "~" or filename.startswith("<"):
        return None  # a built-in: its caller's stage
    for stage, marks in _STAGES:
        if any(mark in filename or mark == name for mark in marks):
            return stage
    return "other"


def by_stage(stats: pstats.Stats) -> dict[str, float]:
    """Each stage's share of the profiled time (0..1)."""
    table = stats.stats  # type: ignore[attr-defined]
    seconds: dict[str, float] = {}

    def credit(func: _Func, amount: float, depth: int = 0) -> None:
        stage = _stage(func)
        if stage is None and depth < 3:
            callers = table[func][4]
            total = sum(entry[2] for entry in callers.values()) or 1.0
            for caller, entry in callers.items():
                credit(caller, amount * entry[2] / total, depth + 1)
            return
        key = stage or "other"
        seconds[key] = seconds.get(key, 0.0) + amount

    for func, (_, _, own, _, _) in table.items():
        credit(func, own)
    everything = sum(seconds.values()) or 1.0
    return {stage: amount / everything for stage, amount in seconds.items()}


def compiled_modules() -> list[str]:
    """The loaded pushup modules that are compiled extensions (`make compiled`)."""
    return sorted(
        name
        for name, module in sys.modules.items()
        if name.startswith("pushup.")
        and not (getattr(module, "__file__", None) or ".py").endswith(".py")
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--requests", "n", default=20_000, show_default=True, help="Requests per path.")
@click.option("--profile", is_flag=True, help="Show where each path's time goes (cProfile).")
def stages(n: int, profile: bool) -> None:
    """Time each request path in this process, without sockets."""
    results = measure(n, profile)
    compiled = compiled_modules()
    if compiled:
        click.echo(f"compiled with mypyc: {len(compiled)} modules")
        if profile:
            click.echo("no split by stage: cProfile cannot see inside them (`make pure`)")
    for path, ns, stats in results:
        click.echo(f"{path.name:8} {ns / 1000:7.2f} µs per request  ({path.what})")
        if stats is None or compiled:
            continue  # cProfile cannot see inside compiled functions
        shares = sorted(by_stage(stats).items(), key=lambda item: -item[1])
        for stage, share in shares:
            click.echo(f"    {stage:18} {share * ns / 1000:6.2f} µs  {share:5.1%}")

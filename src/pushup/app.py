"""Wiring: settings to engine, hub, router and server; start, run, stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pushup import __version__, banner
from pushup.config import Settings
from pushup.core.engine import Engine
from pushup.core.errors import EngineUnavailable
from pushup.core.hub import Hub
from pushup.engine_urls import ALL_REDIS_SCHEMES, NATS_SCHEMES, shown_url
from pushup.engines.memory import Journal, MemoryEngine
from pushup.http.cors import CorsPolicy
from pushup.http.limits import Limits, raise_open_files
from pushup.http.router import Router
from pushup.http.server import HttpServer
from pushup.http.services import Services
from pushup.http.shutdown import stop_gracefully
from pushup.observe.observer import Observer
from pushup.startup import (
    Claim,
    StartupError,
    bind,
    check_data_dir,
    claim,
    inherited,
    missing_extra,
)

if TYPE_CHECKING:
    from pushup.http.upstream import Upstream

log = logging.getLogger("pushup")


class App:
    """One PushUp server process: its engine, hub and HTTP server."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.hub = Hub(engine or create_engine(settings), events=settings.channel_events)
        self.limits = Limits.from_settings(settings)
        # Which web origins may read subscriber answers; None: no CORS at all.
        cors = CorsPolicy(settings.cors_origins) if settings.cors_origins else None
        self.http = HttpServer(
            Router(Services(self.hub, settings, self.limits), cors=cors),
            self.hub,
            max_body=settings.max_body_bytes,
            max_header=settings.max_header_bytes,
            keepalive_timeout_s=settings.keepalive_timeout_s,
            ping_interval_s=settings.ping_interval_s,
            upstream=create_upstream(settings),
            limits=self.limits,
            cors=cors,
        )
        # Figures for /metrics and /dashboard, shared with the node's other workers.
        self.observer = Observer(self.hub, self.http)
        self._claim: Claim | None = None

    async def start(self) -> socket.socket:
        """Bind first, so that a taken port fails before the engine opens anything."""
        sock = self._bind()
        try:
            await self.hub.start()
            if self.http.upstream is not None:
                await self.http.upstream.start()
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        sock.listen(4096)
        await self.http.start(sock)
        # The node as the dashboard names it: this host and the port it serves on.
        self.observer.start(node=f"{socket.gethostname()}:{sock.getsockname()[1]}")
        return sock

    def _bind(self) -> socket.socket:
        """The socket to serve on, bound; raises StartupError when it cannot be."""
        settings = self.settings
        if settings.fd is not None:
            return inherited(settings.fd)
        if settings.workers > 1:
            # A worker: the supervisor claimed the port, and the kernel spreads
            # connections over every worker's socket.
            return bind(settings.host, settings.port, reuseport=True)
        self._claim = claim(settings.host, settings.port, shared=False)
        return self._claim.sock

    async def stop(self) -> None:
        await self.observer.stop()
        # Parked polls get their cursor, requests in flight their answer, within a bound.
        await stop_gracefully(self.http, self.settings.shutdown_timeout_s)
        if self.http.upstream is not None:
            await self.http.upstream.close()
        await self.hub.close()
        if self._claim is not None:
            self._claim.release()


def create_engine(settings: Settings) -> Engine:
    """The engine the settings' URL names; Redis and NATS are imported only when
    chosen, so they stay optional extras."""
    scheme = urlsplit(settings.engine_url).scheme
    if scheme in NATS_SCHEMES:
        try:
            from pushup.engines.nats import NatsEngine
        except ImportError as exc:
            url = shown_url(settings.engine_url)
            raise missing_extra("engine_url", url, exc, "nats") from None
        return NatsEngine(
            settings.engine_url,
            message_ttl_s=settings.message_ttl_s,
            max_messages=settings.max_messages,
            channel_ttl_s=settings.channel_ttl_s,
            max_cache_bytes=settings.max_cache_bytes,
        )
    if scheme in ALL_REDIS_SCHEMES:
        try:
            from pushup.engines.redis import RedisEngine
        except ImportError as exc:
            url = shown_url(settings.engine_url)
            raise missing_extra("engine_url", url, exc, "redis") from None
        return RedisEngine(
            settings.engine_url,
            message_ttl_s=settings.message_ttl_s,
            max_messages=settings.max_messages,
            channel_ttl_s=settings.channel_ttl_s,
            max_cache_bytes=settings.max_cache_bytes,
        )
    journal = None
    if settings.data_dir is not None:
        check_data_dir(settings.data_dir)
        journal = Journal(settings.data_dir, message_ttl_s=settings.message_ttl_s)
    return MemoryEngine(
        message_ttl_s=settings.message_ttl_s,
        max_messages=settings.max_messages,
        channel_ttl_s=settings.channel_ttl_s,
        max_cache_bytes=settings.max_cache_bytes,
        journal=journal,
    )


def create_upstream(settings: Settings) -> Upstream | None:
    """The web app to pass requests on to, if any; its HTTP client is imported only
    then."""
    if settings.upstream_url is None:
        return None
    from pushup.http.upstream import Upstream

    return Upstream(
        settings.upstream_url,
        connect_timeout_s=settings.upstream_connect_timeout_s,
        read_timeout_s=settings.upstream_timeout_s,
        max_header=settings.max_header_bytes,
    )


async def serve(settings: Settings, on_ready: Callable[[], None] | None = None) -> None:
    """Run until SIGINT or SIGTERM; `on_ready` is called once serving (a worker tells
    its supervisor)."""
    _tune_gc()
    # Room for --max-connections before the first is accepted.
    files_warning = raise_open_files(settings.max_connections)
    app = App(settings)
    try:
        sock = await app.start()
    except EngineUnavailable as exc:
        await app.stop()
        raise _unusable(settings, exc) from None
    base = banner.url(*sock.getsockname()[:2])
    if settings.workers > 1:
        log.debug("pushup %s listening on %s", __version__, base)  # the supervisor tells
    else:
        banner.log(log, f"pushup {__version__} listening on {base}", settings, base)
    if files_warning is not None:
        log.warning(files_warning)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if on_ready is not None:
        on_ready()
    try:
        await stop.wait()
    finally:
        log.debug("stopping, in at most %g s", settings.shutdown_timeout_s)
        # Signals stay caught until the stop is done: a second one must not cut the
        # graceful stop short (which --shutdown-timeout bounds anyway).
        try:
            await app.stop()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        log.info("pushup stopped")


def _unusable(settings: Settings, exc: EngineUnavailable) -> StartupError:
    """The engine could not start: Redis out of reach, or the data directory taken."""
    if settings.data_dir is None or urlsplit(settings.engine_url).scheme in (
        *ALL_REDIS_SCHEMES,
        *NATS_SCHEMES,
    ):
        return StartupError("engine_url", shown_url(settings.engine_url), f"cannot be used: {exc}")
    return StartupError("data_dir", settings.data_dir, f"cannot be used: {exc}")


def _tune_gc() -> None:
    """Collect cycles less often: requests allocate many short-lived objects that
    reference counting frees, while tens of thousands of parked connections would be
    traversed by every frequent collection (about 15 % of the CPU of a fan-out with
    re-polls, measured with py-spy). Objects from start-up never need collecting."""
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def run(settings: Settings, on_ready: Callable[[], None] | None = None) -> None:
    """Run the server on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(settings, on_ready))

"""The `pushup` command: options and environment to Settings, then run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from pushup import __version__
from pushup.config import DEFAULT_DATA_DIR, Settings, parse_cors_origins, parse_data_dir
from pushup.observe import logs

_POSITIVE = click.FloatRange(min=0, min_open=True, max=1e9)
_F = TypeVar("_F", bound=Callable[..., Any])

# The limits (http/limits.py), each named after its Settings field, so `serve` passes
# them on as they come.
_LIMIT_OPTIONS = [
    click.option(
        "--max-connections",
        "max_connections",
        envvar="PUSHUP_MAX_CONNECTIONS",
        type=click.IntRange(min=1),
        default=18_000,
        show_default=True,
        help="Open connections per worker process, below the open-files limit; past it a "
        "new connection is answered 503 too_many_connections and closed.",
    ),
    click.option(
        "--max-parked-per-ip",
        "max_parked_per_ip",
        envvar="PUSHUP_MAX_PARKED_PER_IP",
        type=click.IntRange(min=0),
        default=1000,
        show_default=True,
        help="Parked polls and open streams per client address and worker, past which "
        "429 too_many_subscriptions; 0: no limit. Loopback peers (a proxy on this "
        "host) are not limited, unless --trust-forwarded-for.",
    ),
    click.option(
        "--trust-forwarded-for/--no-trust-forwarded-for",
        "trust_forwarded_for",
        envvar="PUSHUP_TRUST_FORWARDED_FOR",
        default=False,
        show_default=True,
        help="Count the clients of a proxy on this host (a loopback peer) by the last "
        "X-Forwarded-For entry, for --max-parked-per-ip.",
    ),
    click.option(
        "--header-timeout",
        "header_timeout_s",
        envvar="PUSHUP_HEADER_TIMEOUT",
        type=_POSITIVE,
        default=10.0,
        show_default=True,
        help="Seconds to receive a request's line and headers once it began; then 408.",
    ),
    click.option(
        "--body-timeout",
        "body_timeout_s",
        envvar="PUSHUP_BODY_TIMEOUT",
        type=_POSITIVE,
        default=30.0,
        show_default=True,
        help="Seconds to receive a request's body once its headers are in; then 408.",
    ),
    click.option(
        "--max-header-bytes",
        "max_header_bytes",
        envvar="PUSHUP_MAX_HEADER_BYTES",
        type=click.IntRange(min=1024),
        default=64 * 1024,
        show_default=True,
        help="Bytes of a request's line and headers; past it 431 headers_too_large.",
    ),
    click.option(
        "--max-body-bytes",
        "max_body_bytes",
        envvar="PUSHUP_MAX_BODY_BYTES",
        type=click.IntRange(min=1024),
        default=1024 * 1024,
        show_default=True,
        help="Bytes of a request body; past it 413 payload_too_large.",
    ),
    click.option(
        "--max-message-bytes",
        "max_message_bytes",
        envvar="PUSHUP_MAX_MESSAGE_BYTES",
        type=click.IntRange(min=1),
        default=1024 * 1024,
        show_default=True,
        help="Bytes of one message's data (as JSON); past it 413 message_too_large.",
    ),
    click.option(
        "--max-channels-per-request",
        "max_channels_per_request",
        envvar="PUSHUP_MAX_CHANNELS_PER_REQUEST",
        type=click.IntRange(min=1),
        default=100,
        show_default=True,
        help="Channels one poll, stream or publication may name; past it 400 too_many_channels.",
    ),
    click.option(
        "--publish-rate",
        "publish_rate",
        envvar="PUSHUP_PUBLISH_RATE",
        type=click.FloatRange(min=0, max=1e9),
        default=0.0,
        show_default=True,
        help="Messages a second per publisher (per key sent, else per address), past "
        "which 429 rate_limited; 0: no limit.",
    ),
    click.option(
        "--publish-burst",
        "publish_burst",
        envvar="PUSHUP_PUBLISH_BURST",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Messages a publisher may send at once above --publish-rate; 0: one second's worth.",
    ),
    click.option(
        "--max-cache-bytes",
        "max_cache_bytes",
        envvar="PUSHUP_MAX_CACHE_BYTES",
        type=click.IntRange(min=1024),
        default=256 * 1024 * 1024,
        show_default=True,
        help="Bytes of message data cached over all channels; past it the oldest "
        "messages are dropped first (subscribers see gap: true).",
    ),
]


def _limit_options(command: _F) -> _F:
    for option in reversed(_LIMIT_OPTIONS):
        command = option(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pushup")
def main() -> None:
    """PushUp: an event-driven long-polling publish/subscribe server."""


@main.command()
@click.option(
    "--host",
    envvar="PUSHUP_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on.",
)
@click.option(
    "--port",
    envvar="PUSHUP_PORT",
    type=click.IntRange(0, 65535),
    default=7070,
    show_default=True,
    help="Port to listen on.",
)
@click.option(
    "--message-ttl",
    envvar="PUSHUP_MESSAGE_TTL",
    type=_POSITIVE,
    default=300.0,
    show_default=True,
    help="Seconds a published message stays cached.",
)
@click.option(
    "--max-messages",
    envvar="PUSHUP_MAX_MESSAGES",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Messages cached per channel; the oldest are dropped first.",
)
@click.option(
    "--channel-ttl",
    envvar="PUSHUP_CHANNEL_TTL",
    type=_POSITIVE,
    default=3600.0,
    show_default=True,
    help="Seconds without activity before a channel expires.",
)
@click.option(
    "--max-timeout",
    envvar="PUSHUP_MAX_TIMEOUT",
    type=_POSITIVE,
    default=300.0,
    show_default=True,
    help="Longest poll timeout a subscriber may ask for.",
)
@click.option(
    "--publisher-key",
    envvar="PUSHUP_PUBLISHER_KEY",
    default=None,
    help="Bearer key publishers must send; without it only loopback may publish.",
)
@click.option(
    "--keepalive-timeout",
    envvar="PUSHUP_KEEPALIVE_TIMEOUT",
    type=_POSITIVE,
    default=75.0,
    show_default=True,
    help="Seconds an idle keep-alive connection stays open.",
)
@click.option(
    "--ping-interval",
    envvar="PUSHUP_PING_INTERVAL",
    type=_POSITIVE,
    default=20.0,
    show_default=True,
    help="Seconds between keep-alive pings on SSE and WebSocket streams; a WebSocket "
    "peer that answers none of two is closed.",
)
@click.option(
    "--fd",
    envvar="PUSHUP_FD",
    type=click.IntRange(min=0),
    default=None,
    help="Serve on this already bound, listening socket instead of host:port.",
)
@click.option(
    "--engine",
    envvar="PUSHUP_ENGINE",
    default="memory://",
    show_default=True,
    help="Where channels and messages live: memory:// (this process) or "
    "redis://host:port/db (shared by every node using that Redis).",
)
@click.option(
    "--workers",
    envvar="PUSHUP_WORKERS",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes sharing the port, one per core; above 1 needs --engine redis://.",
)
@click.option(
    "--data-dir",
    envvar="PUSHUP_DATA_DIR",
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="Directory where the embedded engine keeps channels and messages across "
    "restarts (locked: one server per directory); 'none' keeps nothing. Unused with "
    "--engine redis://, where Redis keeps them.",
)
@click.option(
    "--upstream",
    envvar="PUSHUP_UPSTREAM",
    default=None,
    help="The web app behind PushUp, e.g. http://127.0.0.1:8000: every request PushUp "
    "does not answer itself is passed on to it (reverse-proxy mode).",
)
@click.option(
    "--upstream-connect-timeout",
    envvar="PUSHUP_UPSTREAM_CONNECT_TIMEOUT",
    type=_POSITIVE,
    default=5.0,
    show_default=True,
    help="Seconds to connect to the upstream before answering 504.",
)
@click.option(
    "--upstream-timeout",
    envvar="PUSHUP_UPSTREAM_TIMEOUT",
    type=_POSITIVE,
    default=60.0,
    show_default=True,
    help="Seconds to wait for the upstream's answer, and between two reads of its body, "
    "before answering 504 (or cutting the response short).",
)
@click.option(
    "--subscriber-secret",
    envvar="PUSHUP_SUBSCRIBER_SECRET",
    default=None,
    help="HS256 secret (32 bytes or more) of the JWTs every subscriber must then present "
    "(claims: channels, exp); better given as PUSHUP_SUBSCRIBER_SECRET, which other "
    "local users cannot read in the process list.",
)
@click.option(
    "--cors-origins",
    envvar="PUSHUP_CORS_ORIGINS",
    default="",
    help="Comma-separated web origins (https://app.example) whose pages may read polls "
    "and streams from another origin, or * for any; default: none (no CORS headers).",
)
@click.option(
    "--shutdown-timeout",
    envvar="PUSHUP_SHUTDOWN_TIMEOUT",
    type=_POSITIVE,
    default=10.0,
    show_default=True,
    help="Seconds a stop (SIGTERM) waits for requests in flight before closing the rest.",
)
@click.option(
    "--log-level",
    envvar="PUSHUP_LOG_LEVEL",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--log-format",
    envvar="PUSHUP_LOG_FORMAT",
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
    help="text, or json: one JSON object per line (time, level, logger, message, pid, "
    "worker, request_id and extra fields).",
)
@_limit_options
def serve(
    host: str,
    port: int,
    message_ttl: float,
    max_messages: int,
    channel_ttl: float,
    max_timeout: float,
    publisher_key: str | None,
    keepalive_timeout: float,
    ping_interval: float,
    fd: int | None,
    engine: str,
    data_dir: str,
    workers: int,
    upstream: str | None,
    upstream_connect_timeout: float,
    upstream_timeout: float,
    subscriber_secret: str | None,
    cors_origins: str,
    shutdown_timeout: float,
    log_level: str,
    log_format: str,
    **limits: Any,
) -> None:
    """Run the server."""
    from pushup.app import run

    try:
        settings = Settings(
            host=host,
            port=port,
            message_ttl_s=message_ttl,
            max_messages=max_messages,
            channel_ttl_s=channel_ttl,
            max_timeout_s=max_timeout,
            publisher_key=publisher_key,
            keepalive_timeout_s=keepalive_timeout,
            ping_interval_s=ping_interval,
            fd=fd,
            log_level=log_level,
            log_format=log_format,
            engine_url=engine,
            data_dir=parse_data_dir(data_dir),
            workers=workers,
            upstream_url=upstream or None,
            upstream_connect_timeout_s=upstream_connect_timeout,
            upstream_timeout_s=upstream_timeout,
            subscriber_secret=subscriber_secret or None,
            cors_origins=parse_cors_origins(cors_origins),
            shutdown_timeout_s=shutdown_timeout,
            **limits,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    logs.setup(log_level, log_format)
    if settings.workers > 1:
        from pushup.supervisor import supervise

        raise SystemExit(supervise(settings))
    run(settings)


@main.command(
    context_settings={"help_option_names": ["-h", "--help"], "ignore_unknown_options": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run a benchmark scenario (see `pushup bench --help`)."""
    try:
        from pushup.bench.cli import bench as bench_command
    except ImportError as exc:
        raise click.ClickException(
            f"the benchmark needs the bench extra ({exc.name} is missing): "
            "pip install 'pushup[bench]'"
        ) from None
    bench_command.main(args=list(args), prog_name="pushup bench")

"""The `pushup` command: options and environment to Settings, then run."""

from __future__ import annotations

import logging

import click

from pushup import __version__
from pushup.config import DEFAULT_DATA_DIR, Settings, parse_data_dir

_POSITIVE = click.FloatRange(min=0, min_open=True, max=1e9)


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
    "--log-level",
    envvar="PUSHUP_LOG_LEVEL",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
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
    log_level: str,
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
            engine_url=engine,
            data_dir=parse_data_dir(data_dir),
            workers=workers,
            upstream_url=upstream or None,
            upstream_connect_timeout_s=upstream_connect_timeout,
            upstream_timeout_s=upstream_timeout,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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

"""The `pushup` command: options and environment to Settings, then run.

The `serve` options are the `Settings` fields (see `pushup.options`): click only reads
the flags, `Settings.from_env` adds the `PUSHUP_*` variables and the defaults and checks
them, so an error names the flag or variable the value came from: a bad value is a
usage error (exit status 2), a value that cannot be served with (a taken port, an
unusable data directory; see `pushup.startup`) an error of the environment (status 1).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import IO, Any, TypeVar

import click

from pushup import __version__
from pushup.config import Settings
from pushup.observe import logs
from pushup.options import GROUPS, Option, given_as, options
from pushup.startup import StartupError

_F = TypeVar("_F", bound=Callable[..., Any])
# What `pushup bench` needs beyond the server: its progress bars and its plots.
_BENCH_EXTRA = ("rich", "matplotlib")


class OneLineUsageError(click.UsageError):
    """A usage error said in one line, without the usage and hint click adds: the bad
    flag or variable and what is wrong with it."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"Error: {self.format_message()}", file=file, err=file is None)


class SettingsCommand(click.Command):
    """A command whose `Settings` options are listed by group, each with its variable
    and default, and whose usage errors take one line."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise OneLineUsageError(exc.format_message(), exc.ctx) from None

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Each group, then each option: its flag and variable on one line, its help
        below (as manual pages do, so a help gets the whole width)."""
        specs = options(Settings)
        fields = {opt.field for opt in specs}
        sections = [
            (heading, [_help_row(opt) for opt in specs if opt.group == group])
            for group, heading in GROUPS.items()
        ]
        others = [
            (*record, "")
            for param in self.get_params(ctx)
            if param.name not in fields and (record := param.get_help_record(ctx)) is not None
        ]
        sections.append(("Other", others))
        # One column for the variables of every group, so the groups line up.
        width = max(len(term) for _, rows in sections for term, _, _ in rows)
        for heading, rows in sections:
            with formatter.section(heading):
                for term, beside, below in rows:
                    formatter.write(f"{'':>{formatter.current_indent}}{term:<{width}}  {beside}\n")
                    if below:
                        with formatter.indentation():
                            formatter.write_text(below)


def _help_row(opt: Option) -> tuple[str, str, str]:
    """An option's flag, its variable (with the default, if any) and, below, its help."""
    term = f"--[no-]{opt.name}" if opt.kind is bool else f"{opt.flag} {opt.metavar}"
    default = opt.shown_default
    return term, opt.env if default is None else f"{opt.env}={default}", opt.help


def settings_options(command: _F) -> _F:
    """Add a flag for each `Settings` option, passed on by field name; None when absent
    (click reads no variables: `Settings.from_env` does)."""
    for opt in reversed(options(Settings)):
        flag = f"{opt.flag}/--no-{opt.name}" if opt.kind is bool else opt.flag
        add = click.option(flag, opt.field, default=None, metavar=opt.metavar, help=opt.help)
        command = add(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pushup")
def main() -> None:
    """PushUp: an event-driven long-polling publish/subscribe server."""


@main.command(cls=SettingsCommand, context_settings={"max_content_width": 100})
@settings_options
def serve(**flags: str | bool | None) -> None:
    """Run the server.

    Each option may be set by its PUSHUP_* variable instead, shown with its default;
    a flag wins over its variable.
    """
    from pushup.app import run

    try:
        settings = Settings.from_env(os.environ, flags)
    except ValueError as exc:
        raise OneLineUsageError(str(exc)) from None
    logs.setup(settings.log_level, settings.log_format)
    try:
        if settings.workers > 1:
            from pushup.supervisor import supervise

            raise SystemExit(supervise(settings))
        run(settings)
    except StartupError as exc:
        option = given_as(Settings, exc.field, os.environ, flags)
        raise click.ClickException(f"{option} {exc.value} {exc.problem}") from None


@main.command(
    context_settings={"help_option_names": ["-h", "--help"], "ignore_unknown_options": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run a benchmark scenario (see `pushup bench --help`)."""
    try:
        # Imported now, not when the first progress bar or plot is drawn.
        for module in _BENCH_EXTRA:
            importlib.import_module(module)
        from pushup.bench.cli import bench as bench_command
    except ImportError as exc:
        raise click.ClickException(
            f"the benchmark needs the bench extra ({exc.name} is missing): "
            "pip install 'pushup[bench]'"
        ) from None
    bench_command.main(args=list(args), prog_name="pushup bench")


@main.command(
    context_settings={"help_option_names": ["-h", "--help"], "ignore_unknown_options": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def stages(args: tuple[str, ...]) -> None:
    """Time each request path in this process, stage by stage (`pushup stages --help`)."""
    from pushup.stages import stages as stages_command

    stages_command.main(args=list(args), prog_name="pushup stages")

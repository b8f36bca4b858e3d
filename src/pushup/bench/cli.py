"""`pushup bench <scenario>`: run a scenario, write its JSON, Markdown and plots."""

from __future__ import annotations

import importlib
import pathlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import click

from pushup.bench import report
from pushup.bench.progress import Progress, QuietProgress, RichProgress
from pushup.bench.run import Run
from pushup.bench.scenarios import SCENARIOS
from pushup.bench.scenarios.common import Options
from pushup.bench.targets import TARGET_CHOICES

# The defaults of the options a scenario reads, written once, in `Options`.
_DEFAULTS = Options()
_CONTEXT = {"help_option_names": ["-h", "--help"]}


def _ints(value: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(part.replace("_", "")) for part in value.split(",") if part)
    except ValueError:
        raise click.BadParameter("a comma-separated list of whole numbers") from None
    if not numbers or min(numbers) < 1:
        raise click.BadParameter("a comma-separated list of positive whole numbers")
    return numbers


def _extra(intervals: str | None, nodes: str | None, workers: int | None) -> dict[str, str]:
    """The options only some scenarios read, checked here, passed on as text."""
    extra = {"intervals": intervals} if intervals else {}
    if nodes:
        extra["nodes"] = ",".join(map(str, _ints(nodes)))
    if workers is not None:
        extra["workers"] = str(workers)
    return extra


def _scenario_params() -> list[click.Parameter]:
    """The options every scenario command takes (each reads the ones it needs)."""
    return [
        click.Option(
            ["--target", "targets"],
            multiple=True,
            type=click.Choice(TARGET_CHOICES),
            help="Server(s) to measure; repeat the option. Default: every target.",
        ),
        click.Option(
            ["--subscribers"],
            default=None,
            help="Comma-separated subscriber counts (idle, fanout, paper-scale, cluster, "
            "capacity; the client counts cc of paper-traffic).",
        ),
        click.Option(
            ["--channels"],
            type=click.IntRange(min=1),
            default=None,
            help="Channels to spread subscribers or publications over.",
        ),
        click.Option(
            ["--rounds"],
            type=click.IntRange(min=1),
            default=_DEFAULTS.rounds,
            show_default=True,
            help="Publications per measurement (fanout, paper-scale), publish intervals "
            "per cell (paper-traffic).",
        ),
        click.Option(
            ["--intervals"],
            default=None,
            help="Comma-separated publish intervals in seconds (paper-traffic; default "
            "the paper's 10,20,30,40,50), before --time-scale.",
        ),
        click.Option(
            ["--nodes"],
            default=None,
            help="Comma-separated PushUp node counts behind HAProxy (cluster; default 1,2,3,4).",
        ),
        click.Option(
            ["--workers"],
            type=click.IntRange(min=1),
            default=None,
            help="Worker processes of PushUp and of Nchan (capacity; default 6).",
        ),
        click.Option(
            ["--publications"],
            type=click.IntRange(min=1),
            default=_DEFAULTS.publications,
            show_default=True,
            help="Publications per publish-rate run.",
        ),
        click.Option(
            ["--publishers"],
            type=click.IntRange(min=1),
            default=_DEFAULTS.publishers,
            show_default=True,
            help="Keep-alive publisher connections (pubrate).",
        ),
        click.Option(
            ["--client-processes"],
            type=click.IntRange(min=1),
            default=_DEFAULTS.client_processes,
            show_default=True,
            help="Load-generator processes (more are added past 19,000 connections each).",
        ),
        click.Option(
            ["--time-scale"],
            type=click.FloatRange(min=0.001, max=1.0),
            default=_DEFAULTS.time_scale,
            show_default=True,
            help="Shrink every interval of the paper scenarios.",
        ),
        click.Option(
            ["--out", "out_dir"],
            type=click.Path(file_okay=False, path_type=pathlib.Path),
            default=pathlib.Path("bench-results"),
            show_default=True,
            help="Where to write the JSON, Markdown and PNG files.",
        ),
        click.Option(
            ["--plots/--no-plots"],
            default=True,
            show_default=True,
            help="Draw the paper's figures as PNG files.",
        ),
        click.Option(["--quiet"], is_flag=True, help="No progress bar."),
    ]


def _module(scenario: str) -> ModuleType:
    return importlib.import_module(f"pushup.bench.scenarios.{scenario.replace('-', '_')}")


def scenario_options(scenario: str, params: Mapping[str, Any]) -> Options:
    """A scenario command's parsed parameters as `Options`, the scenario's own defaults
    filling what was not given."""
    module = _module(scenario)
    subscribers = params["subscribers"]
    return Options(
        targets=params["targets"] or getattr(module, "DEFAULT_TARGETS", _DEFAULTS.targets),
        subscribers=_ints(subscribers)
        if subscribers
        else getattr(module, "DEFAULT_SUBSCRIBERS", _DEFAULTS.subscribers),
        channels=params["channels"] or int(getattr(module, "DEFAULT_CHANNELS", _DEFAULTS.channels)),
        rounds=params["rounds"],
        publications=params["publications"],
        publishers=params["publishers"],
        client_processes=params["client_processes"],
        time_scale=params["time_scale"],
        extra=_extra(
            intervals=params["intervals"], nodes=params["nodes"], workers=params["workers"]
        ),
    )


def execute(
    scenario: str, options: Options, out_dir: pathlib.Path, plots: bool, progress: Progress
) -> tuple[Run, list[pathlib.Path]]:
    """Run a scenario and write its files: the run, and the JSON, Markdown and plots."""
    module = _module(scenario)
    run: Run = module.run(options, progress)
    run.finished_at = report.now()
    paths = list(report.write(run, out_dir))
    if plots and hasattr(module, "plot"):
        paths += module.plot(run, out_dir)
    return run, paths


def _scenario_command(scenario: str) -> click.Command:
    def callback(**params: Any) -> None:
        options = scenario_options(scenario, params)
        out_dir, plots = params["out_dir"], params["plots"]
        if params["quiet"]:
            run, paths = execute(scenario, options, out_dir, plots, QuietProgress())
        else:
            with RichProgress() as progress:
                run, paths = execute(scenario, options, out_dir, plots, progress)
        json_path, md_path, *drawn = paths
        for path in drawn:
            click.echo(f"plot: {path}")
        click.echo(f"results: {json_path} {md_path}")
        click.echo(report.summary(run))

    return click.Command(
        scenario,
        context_settings=_CONTEXT,
        params=_scenario_params(),
        callback=callback,
        help=f"Run the `{scenario}` scenario against PushUp and the reference servers.",
        short_help=f"The `{scenario}` scenario.",
    )


bench = click.Group(
    "bench",
    commands=list(map(_scenario_command, SCENARIOS)),
    context_settings=_CONTEXT,
    help="Run benchmark scenarios against PushUp and the reference servers.",
)

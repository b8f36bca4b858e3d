"""`pushup bench <scenario>` runs one scenario and writes its JSON, Markdown and plots;
`pushup bench all` runs every published one, as listed in `pushup.bench.suite`."""

from __future__ import annotations

import importlib
import pathlib
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import click

from pushup.bench import report, suite
from pushup.bench.progress import (
    LineRunsProgress,
    Progress,
    QuietProgress,
    RichProgress,
    RichRunsProgress,
    RunsProgress,
    duration,
)
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


def _extra(
    intervals: str | None, nodes: str | None, workers: int | None, engine: str | None = None
) -> dict[str, str]:
    """The options only some scenarios read, checked here, passed on as text."""
    extra = {"intervals": intervals} if intervals else {}
    if engine:
        names = [part for part in engine.split(",") if part]
        if not names or any(name not in ("redis", "nats") for name in names):
            raise click.BadParameter("a comma-separated list of redis, nats", param_hint="--engine")
        extra["engine"] = ",".join(names)
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
            ["--engine"],
            default=None,
            help="Shared engines the cluster scenario measures, in turn, comma-separated: "
            "redis, nats (default redis).",
        ),
        click.Option(
            ["--workers"],
            type=click.IntRange(min=1),
            default=None,
            help="Worker processes of PushUp and of Nchan (capacity; default 6), or of "
            "pushup-workers-nats (pubrate; default 2).",
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
            intervals=params["intervals"],
            nodes=params["nodes"],
            workers=params["workers"],
            engine=params["engine"],
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


def parse(args: Sequence[str]) -> Options:
    """The options of a `pushup bench <scenario> ...` command given its arguments,
    checked as the command line checks them."""
    scenario, *rest = args
    command = bench.commands[scenario]
    with command.make_context(f"pushup bench {scenario}", rest) as ctx:
        return scenario_options(scenario, ctx.params)


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


def _names(value: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in value.split(",") if name.strip())


@click.command(
    "all", context_settings=_CONTEXT, short_help="Every run of docs/benchmarks.md, at its size."
)
@click.option("--list", "show_list", is_flag=True, help="Print the commands, one a line; stop.")
@click.option(
    "--only", default="", metavar="NAME[,NAME]", help="Run only these (names: --dry-run)."
)
@click.option("--skip", default="", metavar="NAME[,NAME]", help="Leave these runs out.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    default=pathlib.Path("bench-results"),
    show_default=True,
    help="Where every run writes its JSON, Markdown and PNG files (a run sharing its "
    "scenario with an earlier one, into a directory named after it).",
)
@click.option("--dry-run", is_flag=True, help="Print the runs and their estimates; run nothing.")
@click.option(
    "--scale",
    type=click.FloatRange(min=0, min_open=True, max=1),
    default=1.0,
    show_default=True,
    help="Shrink subscriber counts, publications, times and estimates by this factor, to "
    "try the command out in little time (1: the published sizes).",
)
@click.option("--quiet", is_flag=True, help="No progress bar: a line as each run begins and ends.")
def all_runs(
    show_list: bool,
    only: str,
    skip: str,
    out_dir: pathlib.Path,
    dry_run: bool,
    scale: float,
    quiet: bool,
) -> None:
    """Reproduce every table and plot of docs/benchmarks.md: its commands, at the
    published sizes, in order. Exits non-zero if a run crashed (not if a target is
    missed)."""
    if show_list:
        for published in suite.RUNS:
            click.echo(published.command)
        return
    try:
        chosen = suite.select(suite.RUNS, _names(only), _names(skip))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    planned = []
    for published in chosen:
        options = parse(published.args)
        planned.append(
            suite.Planned(published, suite.scaled(options, scale), published.estimate_s * scale)
        )
    if dry_run:
        _show(planned, out_dir, scale)
    needed = [
        name for item in planned for name in suite.programs(item.published.scenario, item.options)
    ]
    problem = suite.missing(needed)
    if problem:
        raise click.ClickException(problem)
    if not dry_run:
        _run(planned, out_dir, quiet)


def _show(planned: Sequence[suite.Planned], out_dir: pathlib.Path, scale: float) -> None:
    width = max((len(item.published.name) for item in planned), default=0)
    for item in planned:
        published = item.published
        click.echo(
            f"{published.name:<{width}}  {duration(item.estimate_s):>12}  {published.command}"
            f"  -> {published.out_dir(out_dir)}"
        )
    sizes = "the published sizes" if scale == 1 else f"{scale:g} of the published sizes"
    total = duration(sum(item.estimate_s for item in planned))
    click.echo(f"{_runs(len(planned))} at {sizes}: about {total} in all")


def _run(planned: Sequence[suite.Planned], out_dir: pathlib.Path, quiet: bool) -> None:
    def execute_one(
        scenario: str, options: Options, directory: pathlib.Path, progress: RunsProgress
    ) -> Run:
        run, paths = execute(scenario, options, directory, True, progress)
        progress.note("wrote " + " ".join(map(str, paths)))
        return run

    plan = suite.Plan([item.estimate_s for item in planned])
    if quiet:
        outcomes = suite.run_all(
            planned, out_dir, plan, LineRunsProgress(plan, click.echo), execute_one
        )
    else:
        with RichRunsProgress(plan) as progress:
            outcomes = suite.run_all(planned, out_dir, plan, progress, execute_one)
    crashed = sum(outcome.crashed for outcome in outcomes)
    took = duration(plan.elapsed_s())
    click.echo(f"Summary: {_runs(len(outcomes))} in {took}, {crashed} crashed")
    for outcome in outcomes:
        click.echo(f"  {suite.line(outcome)}")
    if crashed:
        raise SystemExit(1)


bench = click.Group(
    "bench",
    commands=[*map(_scenario_command, SCENARIOS), all_runs],
    context_settings=_CONTEXT,
    help="Run benchmark scenarios against PushUp and the reference servers; `all` runs "
    "every one docs/benchmarks.md publishes.",
)

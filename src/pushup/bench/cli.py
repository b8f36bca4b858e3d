"""`pushup bench <scenario>`: run a scenario, write its JSON, Markdown and plots."""

from __future__ import annotations

import importlib
import pathlib

import click

from pushup.bench.scenarios import SCENARIOS
from pushup.bench.scenarios.common import Options
from pushup.bench.targets import TARGET_CHOICES

# The defaults of the options a scenario reads, written once, in `Options`.
_DEFAULTS = Options()


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


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("scenario", type=click.Choice(SCENARIOS))
@click.option(
    "--target",
    "targets",
    multiple=True,
    type=click.Choice(TARGET_CHOICES),
    help="Server(s) to measure; repeat the option. Default: every target.",
)
@click.option(
    "--subscribers",
    default=None,
    help="Comma-separated subscriber counts (idle, fanout, paper-scale, cluster, "
    "capacity; the client counts cc of paper-traffic).",
)
@click.option(
    "--channels",
    type=click.IntRange(min=1),
    default=None,
    help="Channels to spread subscribers or publications over.",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=_DEFAULTS.rounds,
    show_default=True,
    help="Publications per measurement (fanout, paper-scale), publish intervals "
    "per cell (paper-traffic).",
)
@click.option(
    "--intervals",
    default=None,
    help="Comma-separated publish intervals in seconds (paper-traffic; default "
    "the paper's 10,20,30,40,50), before --time-scale.",
)
@click.option(
    "--nodes",
    default=None,
    help="Comma-separated PushUp node counts behind HAProxy (cluster; default 1,2,3,4).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes of PushUp and of Nchan (capacity; default 6).",
)
@click.option(
    "--publications",
    type=click.IntRange(min=1),
    default=_DEFAULTS.publications,
    show_default=True,
    help="Publications per publish-rate run.",
)
@click.option(
    "--publishers",
    type=click.IntRange(min=1),
    default=_DEFAULTS.publishers,
    show_default=True,
    help="Keep-alive publisher connections (pubrate).",
)
@click.option(
    "--client-processes",
    type=click.IntRange(min=1),
    default=_DEFAULTS.client_processes,
    show_default=True,
    help="Load-generator processes (more are added past 19,000 connections each).",
)
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0.001, max=1.0),
    default=_DEFAULTS.time_scale,
    show_default=True,
    help="Shrink every interval of the paper scenarios.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    default=pathlib.Path("bench-results"),
    show_default=True,
    help="Where to write the JSON, Markdown and PNG files.",
)
@click.option(
    "--plots/--no-plots",
    default=True,
    show_default=True,
    help="Draw the paper's figures as PNG files.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def bench(
    scenario: str,
    targets: tuple[str, ...],
    subscribers: str | None,
    channels: int | None,
    rounds: int,
    intervals: str | None,
    nodes: str | None,
    workers: int | None,
    publications: int,
    publishers: int,
    client_processes: int,
    time_scale: float,
    out_dir: pathlib.Path,
    plots: bool,
    quiet: bool,
) -> None:
    """Run a benchmark SCENARIO against PushUp and the reference servers."""
    from pushup.bench import report
    from pushup.bench.progress import QuietProgress, RichProgress

    module = importlib.import_module(f"pushup.bench.scenarios.{scenario.replace('-', '_')}")
    options = Options(
        targets=targets or getattr(module, "DEFAULT_TARGETS", _DEFAULTS.targets),
        subscribers=_ints(subscribers)
        if subscribers
        else getattr(module, "DEFAULT_SUBSCRIBERS", _DEFAULTS.subscribers),
        channels=channels or int(getattr(module, "DEFAULT_CHANNELS", _DEFAULTS.channels)),
        rounds=rounds,
        publications=publications,
        publishers=publishers,
        client_processes=client_processes,
        time_scale=time_scale,
        extra=_extra(intervals=intervals, nodes=nodes, workers=workers),
    )
    if quiet:
        run = module.run(options, QuietProgress())
    else:
        with RichProgress() as progress:
            run = module.run(options, progress)
    run.finished_at = report.now()
    json_path, md_path = report.write(run, out_dir)
    if plots and hasattr(module, "plot"):
        for path in module.plot(run, out_dir):
            click.echo(f"plot: {path}")
    click.echo(f"results: {json_path} {md_path}")
    click.echo(report.summary(run))

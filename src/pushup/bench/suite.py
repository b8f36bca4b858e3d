"""`pushup bench all`: every run behind docs/benchmarks.md, declared once, run in order.

`RUNS` is the one list of the published commands; docs/benchmarks.md shows the same
lines (a test compares them), so the figures and the way to reproduce them cannot
drift apart. Each run has an estimated duration, corrected by the runs already done.
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from pushup.bench import nchan, report
from pushup.bench.progress import RunsProgress, duration
from pushup.bench.run import Run
from pushup.bench.scenarios.common import Options
from pushup.bench.targets import haproxy, redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    """One published run: its name (for --only), its `pushup bench` arguments as
    docs/benchmarks.md writes them, and how long it took on the machine described there."""

    name: str
    args: tuple[str, ...]
    estimate_s: float

    @property
    def scenario(self) -> str:
        return self.args[0]

    @property
    def command(self) -> str:
        return " ".join(("pushup", "bench", *self.args))

    def out_dir(self, base: pathlib.Path) -> pathlib.Path:
        """`base`, or a directory of its own when another run writes the same scenario's
        files (as docs/bench/paper-traffic-full-scale/ holds the full-scale run)."""
        return base if self.name == self.scenario else base / self.name


# The estimates are measured: the wall-clock time of each published run, finished_at -
# started_at of the JSON it wrote into docs/bench (where `out_dir` puts it), on the
# 2-core machine of docs/benchmarks.md (tests/bench/test_all.py holds them to it).
# `pubrate-journal` has no JSON of its own: 2 x 62,000 publications (warm-up and 3 runs,
# 1 and 100 channels) per target at the published rates (about 24,000/s without the
# journal and 12,000-16,000/s with it) come to 14 s, plus start-up.
RUNS: tuple[Published, ...] = (
    Published("idle", ("idle", "--subscribers", "10000,19000"), 158),
    Published("fanout", ("fanout", "--subscribers", "10000,19000", "--rounds", "5"), 1197),
    Published("pubrate", ("pubrate",), 36),
    Published(
        "pubrate-journal", ("pubrate", "--target", "pushup", "--target", "pushup-journal"), 20
    ),
    Published(
        "pubrate-workers",
        (
            "pubrate",
            *("--target", "pushup-journal", "--target", "pushup-workers-nats"),
            *("--workers", "2", "--publications", "5000"),
        ),
        20,
    ),
    Published("paper-scale", ("paper-scale", "--rounds", "5"), 237),
    Published("paper-traffic", ("paper-traffic", "--time-scale", "0.1"), 553),
    Published(
        "paper-traffic-full-scale",
        ("paper-traffic", "--time-scale", "1", "--rounds", "1"),
        1830,
    ),
    Published(
        "cluster", ("cluster", "--engine", "redis,nats", "--nodes", "1,2,3,4", "--rounds", "5"), 932
    ),
    Published("capacity", ("capacity", "--workers", "6", "--rounds", "3"), 806),
)


def select(runs: Sequence[Published], only: Sequence[str], skip: Sequence[str]) -> list[Published]:
    """The runs named in `only` (all when empty) less those in `skip`, in table order."""
    names = [run.name for run in runs]
    unknown = [name for name in (*only, *skip) if name not in names]
    if unknown:
        raise ValueError(f"no run named {', '.join(unknown)}; the runs: {', '.join(names)}")
    return [run for run in runs if (not only or run.name in only) and run.name not in skip]


# -- what a run needs installed -------------------------------------------------------


def _installed(name: str, fallback: str) -> bool:
    return shutil.which(name) is not None or os.path.exists(fallback)


# Each system program a run may start: how to tell it is installed, and the hint its
# target gives when it is not ("apt-get install <packages>").
PROGRAMS: dict[str, tuple[Callable[[], bool], str]] = {
    "nginx with Nchan": (
        lambda: os.path.exists(nchan.NGINX) and os.path.exists(nchan.NCHAN_MODULE),
        nchan.INSTALL_HINT,
    ),
    "redis-server": (lambda: _installed("redis-server", redis.FALLBACK), redis.INSTALL_HINT),
    "haproxy": (lambda: _installed("haproxy", haproxy.FALLBACK), haproxy.INSTALL_HINT),
}
# What each scenario starts besides its targets, and what each target starts.
_SCENARIO_PROGRAMS = {"cluster": ("redis-server", "haproxy"), "capacity": ("redis-server",)}
_TARGET_PROGRAMS = {"nchan": "nginx with Nchan"}


def programs(scenario: str, options: Options) -> list[str]:
    """The system programs a run will start."""
    needed = list(_SCENARIO_PROGRAMS.get(scenario, ()))
    needed += [_TARGET_PROGRAMS[t] for t in options.targets if t in _TARGET_PROGRAMS]
    return list(dict.fromkeys(needed))


def missing(needed: Sequence[str]) -> str | None:
    """One line naming the missing programs and the packages to install; None: none is."""
    absent = [name for name in dict.fromkeys(needed) if not PROGRAMS[name][0]()]
    if not absent:
        return None
    packages = " ".join(PROGRAMS[name][1].removeprefix("apt-get install ") for name in absent)
    return (
        f"missing {', '.join(absent)}: apt-get install {packages} "
        "(scripts/install-test-deps.sh installs every one)"
    )


# -- sizes for trying the command out ---------------------------------------------------

# Below this the paper scenarios' intervals and poll timeouts get shorter than a
# request takes on loopback.
MIN_TIME_SCALE = 0.01


def scaled(options: Options, factor: float) -> Options:
    """The options with subscriber counts, publications and times shrunk by `factor`
    (1: as published); tests run the real scenarios this way in seconds."""
    if factor == 1:
        return options
    return replace(
        options,
        subscribers=tuple(max(1, round(n * factor)) for n in options.subscribers),
        publications=max(1, round(options.publications * factor)),
        time_scale=max(MIN_TIME_SCALE, options.time_scale * factor),
    )


# -- running them ---------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """A run about to happen: the table's entry, its parsed options and its estimate
    (shrunk with the sizes; the start-up costs do not shrink, which the first finished
    runs correct)."""

    published: Published
    options: Options
    estimate_s: float


class Plan:
    """The time left: each run's estimate, times how much longer than estimated the
    finished runs took (runs that crashed say nothing about speed and are left out)."""

    def __init__(
        self, estimates_s: Sequence[float], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._estimates = list(estimates_s)
        self._clock = clock
        self._started_at = clock()
        self._next = 0  # the run under way, or the next one
        self._run_started_at: float | None = None
        self._took_s = 0.0  # the finished, counted runs: their durations
        self._estimated_s = 0.0  # and their estimates

    def begin(self) -> None:
        self._run_started_at = self._clock()

    def finish(self, counted: bool = True) -> float:
        """End the run under way; its duration."""
        if self._run_started_at is None:
            raise RuntimeError("finish() without begin()")
        took = self._clock() - self._run_started_at
        if counted:
            self._took_s += took
            self._estimated_s += self._estimates[self._next]
        self._next += 1
        self._run_started_at = None
        return took

    def factor(self) -> float:
        """Actual over estimated duration of the finished runs (1 before any)."""
        return self._took_s / self._estimated_s if self._estimated_s > 0 else 1.0

    def elapsed_s(self) -> float:
        return self._clock() - self._started_at

    def left_s(self) -> float:
        if self._next >= len(self._estimates):
            return 0.0
        factor = self.factor()
        later = factor * sum(self._estimates[self._next + 1 :])
        current = factor * self._estimates[self._next]
        if self._run_started_at is not None:
            current = max(0.0, current - (self._clock() - self._run_started_at))
        return current + later


@dataclass(frozen=True)
class Outcome:
    name: str
    took_s: float
    summary: str  # `report.summary` of the run, or what the crash said
    crashed: bool


# A run's work: run the scenario with these options, write its files into the
# directory, report through the progress; the finished run.
Execute = Callable[[str, Options, pathlib.Path, RunsProgress], Run]


def run_all(
    planned: Sequence[Planned],
    out_dir: pathlib.Path,
    plan: Plan,
    progress: RunsProgress,
    execute: Execute,
) -> list[Outcome]:
    """Every planned run in order; one that crashes is logged and the next one starts."""
    outcomes = []
    for index, item in enumerate(planned, 1):
        name = item.published.name
        progress.begin_run(f"[{index}/{len(planned)}] {name}")
        plan.begin()
        try:
            run = execute(
                item.published.scenario, item.options, item.published.out_dir(out_dir), progress
            )
        except Exception as exc:
            log.exception("%s crashed", name)
            first = str(exc).strip().splitlines()[:1]
            outcome = Outcome(
                name, plan.finish(counted=False), f"{type(exc).__name__}: {''.join(first)}", True
            )
        else:
            outcome = Outcome(name, plan.finish(), report.summary(run), False)
        progress.end_run(line(outcome))
        outcomes.append(outcome)
    return outcomes


def line(outcome: Outcome) -> str:
    verdict = "CRASHED" if outcome.crashed else "done"
    return f"{outcome.name}: {verdict} in {duration(outcome.took_s)}: {outcome.summary}"

"""Progress shown while a benchmark runs (rich), or nothing at all (tests); for
`pushup bench all`, one bar over every run with the time left."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.progress import ProgressColumn, Task, TaskID


class Progress(Protocol):
    def start(self, description: str, total: int) -> None:
        """Begin a step of `total` units."""

    def advance(self, units: int = 1) -> None: ...

    def note(self, text: str) -> None:
        """A line worth keeping above the bar."""


class QuietProgress:
    def start(self, description: str, total: int) -> None:
        pass

    def advance(self, units: int = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass


class RichProgress:
    """A rich progress bar for the step under way, with notes printed above it."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as Bar

        self._bar = Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bar.stop()

    def start(self, description: str, total: int) -> None:
        if self._task is not None:
            self._bar.update(self._task, visible=False)
        self._task = self._bar.add_task(description, total=total)

    def advance(self, units: int = 1) -> None:
        if self._task is not None:
            self._bar.advance(self._task, units)

    def note(self, text: str) -> None:
        self._bar.console.log(text)


# -- `pushup bench all`: one bar over every run ---------------------------------------


def duration(seconds: float) -> str:
    """A duration the way a person reads it: 12 s, 2 min 38 s, 1 h 26 min."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, whole = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {whole} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


class Estimate(Protocol):
    def elapsed_s(self) -> float: ...

    def left_s(self) -> float:
        """Seconds until the last run ends, as estimated now."""


class RunsProgress(Progress, Protocol):
    """Progress over several runs: each run's steps arrive through `Progress`."""

    def begin_run(self, label: str) -> None: ...

    def end_run(self, line: str) -> None:
        """The run is over; `line` says how it went."""


class LineRunsProgress:
    """A line as each run begins and ends, with the time left (no bar: logs, tests)."""

    def __init__(self, estimate: Estimate, echo: Callable[[str], None]) -> None:
        self._estimate = estimate
        self._echo = echo

    def begin_run(self, label: str) -> None:
        self._echo(f"{label}: started, about {duration(self._estimate.left_s())} left in all")

    def end_run(self, line: str) -> None:
        self._echo(line)

    def start(self, description: str, total: int) -> None:
        pass

    def advance(self, units: int = 1) -> None:
        pass

    def note(self, text: str) -> None:
        self._echo(text)


class RichRunsProgress:
    """One rich bar over all the runs: the run and its step under way, the share of
    the estimated time done, the time elapsed and the time left. The bar and the time
    left are read from `estimate` at every refresh, so they move between steps too."""

    def __init__(self, estimate: Estimate) -> None:
        from rich.progress import Progress as Bar
        from rich.progress import TextColumn

        self._bar = Bar(
            TextColumn("{task.description}"),
            *_estimate_columns(estimate),
            transient=False,
        )
        self._task = self._bar.add_task("", total=None)
        self._run = ""
        self._step = ""
        self._steps = (0, 0)

    def __enter__(self) -> RichRunsProgress:
        self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bar.stop()

    def begin_run(self, label: str) -> None:
        self._run, self._step, self._steps = label, "", (0, 0)
        self._show()

    def end_run(self, line: str) -> None:
        self._bar.console.log(line)

    def start(self, description: str, total: int) -> None:
        self._step, self._steps = description, (0, total)
        self._show()

    def advance(self, units: int = 1) -> None:
        done, total = self._steps
        self._steps = (done + units, total)
        self._show()

    def note(self, text: str) -> None:
        self._bar.console.log(text)

    def _show(self) -> None:
        text = self._run
        if self._step:
            done, total = self._steps
            text += f": {self._step} {done}/{total}" if total else f": {self._step}"
        self._bar.update(self._task, description=text)


def _estimate_columns(estimate: Estimate) -> list[ProgressColumn]:
    """A bar of the estimated share done, and the time elapsed and left."""
    from rich.progress import ProgressColumn
    from rich.progress_bar import ProgressBar
    from rich.text import Text

    class Done(ProgressColumn):
        def render(self, task: Task) -> ProgressBar:
            elapsed, left = estimate.elapsed_s(), estimate.left_s()
            share = elapsed / (elapsed + left) if elapsed + left > 0 else 1.0
            return ProgressBar(total=1000, completed=round(1000 * share), width=30)

    class Times(ProgressColumn):
        def render(self, task: Task) -> Text:
            elapsed, left = duration(estimate.elapsed_s()), duration(estimate.left_s())
            return Text(f"{elapsed} elapsed, about {left} left", style="progress.remaining")

    return [Done(), Times()]

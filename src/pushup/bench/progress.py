"""Progress shown while a benchmark runs (rich), or nothing at all (tests)."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.progress import TaskID


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

"""The data directory's lock: `flock` on its `lock` file for the journal's life, so two
servers never share one; the lock dies with the process, however it ends."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from pushup.core.errors import EngineUnavailable

LOCK = "lock"


class DirectoryLock:
    """Held from `acquire` to `release`; the file names the holder's pid."""

    __slots__ = ("_fd", "directory")

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None

    def acquire(self) -> None:
        """Create the directory if need be and lock it; raises EngineUnavailable (with
        a one-line reason) when it cannot."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise EngineUnavailable(
                f"cannot use the data directory {self.directory}: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise EngineUnavailable(
                f"the data directory {self.directory} is in use by another pushup "
                f"server{who}; give each server its own --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None

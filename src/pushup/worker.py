"""One worker of `pushup serve --workers N`, started by the supervisor as
`python -m pushup.worker`: a whole server on the shared port, told its settings on stdin.

The spec on stdin is a pickle from the parent process (trusted, never from a socket):
`{"settings": Settings, "ready_fd": int, "supervisor": pid, "slot": int, "metrics_dir": str,
"stats_secret": str}` (the last three: which worker it is, where the workers share their
metrics, and the node's stats channel; see `pushup.observe`). The worker writes `1` to
`ready_fd` once it serves, so the supervisor can tell a worker that could not start from
one that died later; or, when it cannot start for a reason the user can fix (Redis out
of reach, a missing extra), `0` and that reason as JSON, which the supervisor reports
once, as `pushup serve` alone would, rather than every worker logging its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from pushup.app import run
from pushup.config import Settings
from pushup.observe import logs, observer
from pushup.startup import StartupError

_PR_SET_PDEATHSIG = 1


def main() -> None:
    spec: dict[str, Any] = pickle.load(sys.stdin.buffer)
    settings: Settings = spec["settings"]
    ready_fd: int = spec["ready_fd"]
    _die_with_parent(spec["supervisor"])
    worker = str(spec.get("slot", 0))
    logs.setup(settings.log_level, settings.log_format, worker=worker)
    shared_dir = spec.get("metrics_dir")
    observer.set_identity(
        observer.Identity(
            worker=worker,
            shared_dir=None if shared_dir is None else Path(shared_dir),
            stats_secret=spec.get("stats_secret"),
        )
    )

    def ready() -> None:
        os.write(ready_fd, b"1")
        os.close(ready_fd)

    try:
        run(settings, on_ready=ready)
    except StartupError as exc:
        # Cut to arrive whole: one write of at most PIPE_BUF (4096) bytes.
        reason = orjson.dumps([exc.field, exc.value[:200], exc.problem[:600]])
        with contextlib.suppress(OSError):  # the supervisor is gone: no one to tell
            os.write(ready_fd, b"0" + reason)
        raise SystemExit(1) from None


def _die_with_parent(supervisor: int) -> None:
    """Stop when the supervisor dies, even by SIGKILL: a worker left behind would keep
    serving the port without anyone to restart or stop it (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor:  # it died before the prctl took effect
        raise SystemExit(1)


if __name__ == "__main__":
    main()

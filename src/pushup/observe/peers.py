"""The workers of one node (`--workers N`) share their figures as files.

Each worker writes its snapshot every second to `worker-<slot>.json` in a directory
the supervisor made for this run (and removes when it stops); a scrape of any worker
reads the others' files next to its own live figures. This, rather than
prometheus-client's multiprocess mode, keeps every hot-path count a plain integer
addition (multiprocess mode writes each increment to a memory-mapped file under a
lock), and gauges stay what they are: read from each worker's own structures, at most
a second before the scrape. A restarted worker reads its slot's last file and counts
on from there, so counters never go back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("pushup.observe")

# A snapshot older than this is from a worker that is gone (dead, not yet restarted):
# its counters still count, its gauges no longer do.
STALE_S = 3.0


class Peers:
    """This worker's file and its siblings' in the shared directory."""

    def __init__(self, directory: Path, worker: str) -> None:
        self.directory = directory
        self.worker = worker
        self._path = directory / f"worker-{worker}.json"

    def previous(self) -> dict[str, Any] | None:
        """What this slot's previous worker last wrote, if any."""
        return _read(self._path)

    def write(self, snapshot: dict[str, Any]) -> None:
        # Written aside then renamed: a reader never sees half a file.
        partial = self._path.with_suffix(f".{os.getpid()}.tmp")
        try:
            partial.write_bytes(orjson.dumps(snapshot))
            os.replace(partial, self._path)
        except OSError as exc:
            log.warning("cannot share this worker's metrics in %s: %s", self.directory, exc)
            with contextlib.suppress(OSError):
                partial.unlink()

    def others(self) -> list[dict[str, Any]]:
        """The other workers' latest snapshots, by slot; stale ones marked `stale`."""
        found = []
        now = time.time()
        try:
            paths = sorted(self.directory.glob("worker-*.json"))
        except OSError:
            return []
        for path in paths:
            if path == self._path:
                continue
            snapshot = _read(path)
            if snapshot is None or "worker" not in snapshot:
                continue
            if now - float(snapshot.get("time", 0)) > STALE_S:
                snapshot["stale"] = True
            found.append(snapshot)
        return found


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None

"""A benchmark run's results: measured rows, target checks, and where it ran."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any

from pushup import __version__


@dataclass
class Check:
    """One performance target: does `value` meet `limit` (a ratio against a reference)?"""

    name: str
    value: float | None
    limit: str
    holds: bool | None  # None: could not be judged (a reference was missing)
    note: str = ""


@dataclass
class Run:
    scenario: str
    params: dict[str, Any]
    columns: list[str]  # the row keys shown in the Markdown table, in order
    rows: list[dict[str, Any]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=lambda: machine())
    started_at: str = field(default_factory=lambda: now())
    finished_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def machine() -> dict[str, Any]:
    """Where the run happened, for the record."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(memory / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pushup": __version__,
        "nginx": _nginx_version(),
    }


def _nginx_version() -> str | None:
    try:
        result = subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stderr.strip().removeprefix("nginx version: ") or None

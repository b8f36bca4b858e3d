"""Server resource use read from /proc: resident memory and CPU of a process tree."""

from __future__ import annotations

import os
from collections.abc import Iterable

_TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(child) for child in f.read().split())
    except OSError:
        pass
    return kids


def tree(pids: Iterable[int]) -> list[int]:
    """The processes and all their descendants."""
    seen: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.append(pid)
            todo.extend(_children(pid))
    return seen


def rss_bytes(pids: Iterable[int]) -> int:
    """Resident memory (VmRSS) summed over the process trees."""
    total = 0
    for pid in tree(pids):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def cpu_seconds(pids: Iterable[int]) -> float:
    """User plus system CPU time summed over the process trees."""
    total = 0
    for pid in tree(pids):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICKS


def threads(pids: Iterable[int]) -> int:
    count = 0
    for pid in tree(pids):
        try:
            count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return count

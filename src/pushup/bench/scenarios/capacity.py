"""`capacity`: how many parked long polls one machine holds, and one publication to all.

PushUp with `--workers W` on the Redis engine against Nchan with `worker_processes W`,
both with their workers on one port through SO_REUSEPORT (even spread) and at most
20,000 open files per process. For each N of `--subscribers`, on a fresh server:

- N keep-alive subscribers on one channel long polling (250 s, so no poll times out
  while the others connect), spread over enough client processes (19,000 each at most),
  each with its own source address;
- connected and parked (the server's count: Nchan's is global, PushUp's is the sum of
  every worker's own count, see `targets.workers`), each worker's open descriptors
  (they must stay under 19,500) and, for PushUp, each worker's parked polls;
- memory with every poll parked: VmRSS summed over the server's process tree (as the
  other scenarios), redis-server's apart, and the proportional set size (PSS, which
  counts pages shared between workers once) from which bytes per parked poll is taken,
  minus the server's own baseline before any subscriber came;
- `--rounds` publications, each once the re-polls of the previous one parked again:
  time from creating the message to 50, 99 and 100 % of the N subscribers having it
  (median over the rounds; missing when not that many received), and RMP, deliveries /
  (N x rounds).

A server that fails at some N (refuses connections, stops answering) yields a row saying
so: every wait is bounded and ends early once progress stalls.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import time
from dataclasses import replace
from typing import Any

from pushup.bench import procstat
from pushup.bench.fleet import Fleet
from pushup.bench.progress import Progress
from pushup.bench.run import Check, Run
from pushup.bench.scenarios.common import (
    Options,
    client_processes,
    failures,
    line,
    parked_on,
    publish_one,
    received,
    text,
    wait_progress,
)
from pushup.bench.stats import median, percentile
from pushup.bench.targets.workers import POLL_TIMEOUT_S, NchanWorkersTarget, WorkersTarget

DEFAULT_TARGETS = ("pushup", "nchan")
DEFAULT_SUBSCRIBERS = (20_000, 40_000, 60_000, 80_000, 100_000)
DEFAULT_WORKERS = 6
GOAL = 100_000  # parked polls on this machine, with one publication reaching all
SOCKET_LIMIT = 19_500  # descriptors a worker may hold (the limit is 20,000)

COLUMNS = [
    "target",
    "workers",
    "subscribers",
    "connected",
    "parked",
    "rss_mib",
    "redis_mib",
    "pss_mib",
    "bytes_per_parked",
    "max_worker_fds",
    "p50_ms",
    "p99_ms",
    "p100_ms",
    "rmp_pct",
    "errors",
    "status",
]

_seq = itertools.count(3_000_000)
CapacityTarget = WorkersTarget | NchanWorkersTarget


def workers_of(options: Options) -> int:
    """`--workers`, as the command line passed it on."""
    return int(options.extra.get("workers") or DEFAULT_WORKERS)


def make(name: str, workers: int) -> CapacityTarget:
    if name == "pushup":
        return WorkersTarget(workers=workers)
    if name == "nchan":
        return NchanWorkersTarget(workers=workers)
    raise ValueError(f"capacity measures pushup and nchan, not {name!r}")


def run(options: Options, progress: Progress) -> Run:
    workers = workers_of(options)
    result = Run(
        "capacity",
        {
            "targets": list(options.targets),
            "workers": workers,
            "subscribers": list(options.subscribers),
            "rounds": options.rounds,
            "poll_timeout_s": POLL_TIMEOUT_S,
            "deadline_s": options.deadline_s,
        },
        COLUMNS,
    )
    for name in options.targets:
        for count in options.subscribers:
            progress.start(f"capacity {name} x{workers} {count:,}", options.rounds + 2)
            row = _measure(name, workers, count, options, progress)
            result.rows.append(row)
            if row["status"] != "ok":
                progress.note(f"{name} at {count:,}: {row['status']}")
    result.checks += _checks(result)
    result.notes += _notes(result)
    return result


def _measure(
    name: str, workers: int, count: int, options: Options, progress: Progress
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "target": name,
        "workers": workers,
        "subscribers": count,
        "connected": 0,
        "parked": None,
        "errors": 0,
        "rounds": [],
    }
    problems: list[str] = []
    # Opening 100,000 connections takes a while: a deadline that grows with N (a wait
    # still ends early once progress stalls).
    options = replace(options, deadline_s=max(options.deadline_s, count / 500))
    try:
        target = make(name, workers)
        target.start()
        try:
            _measure_target(target, count, options, progress, row, problems)
        finally:
            target.stop()
    except Exception as exc:  # a failure is a result here: record it, carry on
        problems.append(f"error: {exc!r}")
    rounds: list[dict[str, Any]] = row["rounds"]
    for key in ("p50_ms", "p99_ms", "p100_ms"):
        values = [r[key] for r in rounds]
        row[key] = None if not values or None in values else median(values)
    delivered = sum(r["delivered"] for r in rounds)
    row["rmp_pct"] = 100.0 * delivered / (count * options.rounds)
    row["errors"] += sum(r["errors"] for r in rounds)
    if len(rounds) < options.rounds:
        problems.append(f"{len(rounds)} of {options.rounds} rounds")
    if row["rmp_pct"] < 100:
        problems.append(f"RMP {row['rmp_pct']:.1f} %")
    fds = row.get("max_worker_fds")
    if fds is not None and fds >= SOCKET_LIMIT:
        problems.append(f"a worker held {fds:,} descriptors (limit {SOCKET_LIMIT:,})")
    row["status"] = "; ".join(problems) or "ok"
    return row


def _measure_target(
    target: CapacityTarget,
    count: int,
    options: Options,
    progress: Progress,
    row: dict[str, Any],
    problems: list[str],
) -> None:
    channel = target.create_channel()
    base_pss = pss_bytes(target.pids())
    row["base_mib"] = procstat.rss_bytes(target.pids()) / 2**20
    processes = client_processes(options, count)
    with Fleet(target.name, target.host, target.port, processes) as fleet:
        started = time.monotonic()
        refused = fleet.open([channel], count, timeout_s=POLL_TIMEOUT_S)
        row["open_s"] = time.monotonic() - started
        connected = count - refused
        row["connected"] = connected
        row["errors"] = refused
        row["client_processes"] = processes
        if refused:
            problems.append(f"{refused:,} connections failed")
        progress.advance()
        parked = wait_progress(lambda: parked_on(target, channel), connected, options.deadline_s)
        row["parked"] = parked
        if parked is None:
            problems.append("server stopped answering")
        elif parked < connected:
            problems.append(f"{parked:,} of {connected:,} parked")
        time.sleep(1.0)  # let the allocators settle before reading memory
        _record_memory(target, row, base_pss)
        progress.advance()
        for index in range(options.rounds):
            if index:
                wait_progress(lambda: parked_on(target, channel), connected, options.deadline_s)
            fleet.stats(reset=True)
            seq = next(_seq)
            published_at = time.monotonic()
            if not publish_one(target, channel, seq, options.payload_pad):
                problems.append(f"publication {index + 1} not acknowledged")
            wait_progress(received(fleet, seq), connected, options.deadline_s)
            row["rounds"].append(_round(fleet, seq, count, time.monotonic() - published_at))
            progress.advance()


def _record_memory(target: CapacityTarget, row: dict[str, Any], base_pss: int) -> None:
    """Memory with every poll parked, and how the load spread over the workers."""
    pids = target.pids()
    row["rss_mib"] = procstat.rss_bytes(pids) / 2**20
    pss = pss_bytes(pids)
    row["pss_mib"] = pss / 2**20
    parked = row["parked"] or 0
    row["bytes_per_parked"] = (pss - base_pss) / parked if parked else None
    fds = [open_files(pid) for pid in target.worker_pids()]
    row["worker_fds"] = fds
    row["max_worker_fds"] = max(fds) if fds else None
    if isinstance(target, WorkersTarget):
        row["worker_parked"] = list(target.spread.values())
        if target.redis_pid is not None:
            row["redis_mib"] = procstat.rss_bytes([target.redis_pid]) / 2**20


def _round(fleet: Fleet, seq: int, count: int, waited_s: float) -> dict[str, Any]:
    stats = fleet.stats()
    trips = stats.trips_s

    def ms(share: float) -> float | None:
        # Against the N asked for: no figure when fewer than that share received.
        if not trips or len(trips) < share * count:
            return None
        value = max(trips) if share == 1.0 else percentile(trips, share)
        return None if value is None else 1000 * value

    return {
        "delivered": min(stats.received.get(seq, 0), count),
        "p50_ms": ms(0.50),
        "p99_ms": ms(0.99),
        "p100_ms": ms(1.0),
        "errors": failures(stats),
        "waited_s": waited_s,
    }


def open_files(pid: int) -> int:
    """Descriptors a process holds (its sockets, nearly all of them here)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def pss_bytes(pids: list[int]) -> int:
    """Proportional set size summed over the process trees: pages shared by several
    workers (the interpreter, nginx's shared memory zone) count once in all."""
    total = 0
    for pid in procstat.tree(pids):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def _checks(result: Run) -> list[Check]:
    checks = []
    for row in result.rows:
        if row["target"] != "pushup" or row["subscribers"] < GOAL:
            continue
        full = row["parked"] == row["subscribers"] and row["rmp_pct"] == 100.0
        spread = (row.get("max_worker_fds") or 0) < SOCKET_LIMIT
        checks.append(
            Check(
                f"{row['subscribers']:,} parked on PushUp x{row['workers']}, "
                "one publication to all",
                row["rmp_pct"],
                f"{GOAL:,} parked, RMP 100 %, < {SOCKET_LIMIT:,} sockets per worker",
                full and spread,
                f"parked {text(row['parked'], ',')}, RMP {row['rmp_pct']:.1f} %, "
                f"busiest worker {text(row.get('max_worker_fds'), ',')} descriptors, "
                f"p100 {text(row['p100_ms'], ',.0f', ' ms')}",
            )
        )
    return checks


def _notes(result: Run) -> list[str]:
    notes = [
        "rss_mib: VmRSS summed over the server's process tree (master or supervisor and "
        "workers), which counts pages the workers share once per worker; pss_mib: the "
        "same tree's proportional set size; bytes_per_parked: PSS growth from the idle "
        "server to every poll parked, per parked poll; redis_mib: PushUp's redis-server, "
        "apart.",
        "p50/p99/p100: time from creating the message to that share of the N subscribers "
        "having it, median over the rounds; RMP: deliveries / (N x rounds).",
        "Server, Redis and the load generator share this machine's cores.",
    ]
    if result.rows and max(row["subscribers"] for row in result.rows) < GOAL:
        notes.append(f"No run reached the {GOAL:,}-poll target: not judged.")
    for row in result.rows:
        if row["status"] != "ok":
            notes.append(f"{row['target']} at {row['subscribers']:,}: {row['status']}.")
    return notes


def plot(run: Run, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Memory per parked poll and fan-out time against parked polls, a line per server."""
    from pushup.bench.plots import line_figure

    if not run.rows:
        return []
    counts = sorted({row["subscribers"] for row in run.rows})
    names = list(dict.fromkeys(row["target"] for row in run.rows))
    workers = run.params.get("workers")
    paths = []
    figures = (
        ("memory", "server memory (PSS)", "MiB", "pss_mib", (0.0, None)),
        ("fanout", "one publication to all: time to 100 %", "p100 (ms)", "p100_ms", (0.0, None)),
        ("rmp", "received message percentage", "RMP (%)", "rmp_pct", (0.0, 105.0)),
    )
    for suffix, title, ylabel, key, ylim in figures:
        series = [
            line(
                (row for row in run.rows if row["target"] == name),
                "subscribers",
                key,
                f"{name} ({workers} workers)",
                name,
            )
            for name in names
        ]
        paths.append(
            line_figure(
                out_dir / f"capacity-{suffix}.png",
                f"Capacity: {title}",
                "parked long polls (subscribers asked for)",
                ylabel,
                series,
                xticks=counts,
                ylim=ylim,
                footnote=f"{run.params.get('rounds')} publications to all; "
                "missing points: not everyone received",
            )
        )
    return paths

"""What the scenarios share: options, a running target, waiting with a deadline, one
timed publication, the rounds `paper-scale` and `cluster` measure alike, and the
pieces of their checks, notes and plots."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pushup.bench import procstat
from pushup.bench.fleet import MAX_PER_PROCESS, Fleet, FleetStats
from pushup.bench.loadgen import Recorder, payload, publish_all
from pushup.bench.plots import Series
from pushup.bench.progress import Progress
from pushup.bench.stats import mean
from pushup.bench.targets import Target, make_target

# The paper's long-poll timeout.
LP_TIMEOUT_S = 50.0


@dataclass(frozen=True)
class Options:
    """Every knob of `pushup bench`; each scenario reads the ones it needs."""

    targets: tuple[str, ...] = ("pushup", "mlp", "nchan")
    subscribers: tuple[int, ...] = (10_000,)
    channels: int = 1
    rounds: int = 3
    publications: int = 20_000
    publishers: int = 32
    depth: int = 1
    client_processes: int = 2
    time_scale: float = 1.0
    payload_pad: int = 0
    deadline_s: float = 120.0
    extra: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def running(name: str, **options: object) -> Iterator[Target]:
    target = make_target(name, **options)
    target.start()
    try:
        yield target
    finally:
        target.stop()


def wait_until(probe: Callable[[], bool], deadline_s: float, interval_s: float = 0.05) -> bool:
    """Poll `probe` until true or the deadline passes; whether it became true."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if probe():
            return True
        time.sleep(interval_s)
    return probe()


# A wait ends early after this long without progress (a server that stopped taking
# connections, say): the row then records how far it got.
STALL_S = 10.0


def wait_progress(probe: Callable[[], int | None], goal: int, deadline_s: float) -> int | None:
    """Poll `probe` until it reaches `goal`, stalls for STALL_S, or `deadline_s` passes;
    the last value seen (None: the probe could not answer)."""
    start = time.monotonic()
    end = start + deadline_s
    best, best_at = -1, start
    value = probe()
    while (value is None or value < goal) and time.monotonic() < end:
        now = time.monotonic()
        if value is not None and value > best:
            best, best_at = value, now
        elif now - best_at > min(STALL_S, deadline_s):
            break
        time.sleep(0.1)
        value = probe()
    return value


def parked_on(target: Target, channel: str) -> int | None:
    """Polls parked on a channel as the server says; None when it does not answer
    (an overloaded baseline must not end the run)."""
    try:
        return target.subscribers(channel)
    except Exception:
        return None


def subscribers_on(target: Target, channels: list[str]) -> int:
    return sum(target.subscribers(channel) for channel in channels)


def received(fleet: Fleet, seq: int) -> Callable[[], int]:
    """A probe: deliveries of publication `seq` so far."""
    return lambda: fleet.stats().received.get(seq, 0)


def failures(stats: FleetStats) -> int:
    """Polls that failed: errors, and answers other than 200."""
    return stats.errors + sum(n for status, n in stats.statuses.items() if status != 200)


def client_processes(options: Options, subscribers: int) -> int:
    """Client processes enough for `subscribers`, and at least `--client-processes`."""
    return max(options.client_processes, -(-subscribers // MAX_PER_PROCESS))


def publish_one(target: Target, channel: str, seq: int, pad: int = 0) -> int:
    """Publish one timed message; how many were acknowledged (0 or 1)."""
    sent = [False]

    def one() -> tuple[str, bytes] | None:
        if sent[0]:
            return None
        sent[0] = True
        return channel, payload(seq, pad)

    return asyncio.run(publish_all(target, one, Recorder()))


# -- N parked, then publications to all (paper-scale, cluster) -------------------------

_seq = itertools.count(2_000_000)


def machine_memory_bytes() -> int:
    """MemTotal, the denominator of SMU in percent."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def measure_rounds(
    target: Target,
    count: int,
    options: Options,
    progress: Progress,
    row: dict[str, Any],
    problems: list[str],
) -> None:
    """`count` subscribers long polling one channel of a started target, its memory
    with all parked, then `options.rounds` publications to all, each once the
    re-polls of the previous one parked again: into `row` (its "rounds" list) and
    `problems`."""
    pids = target.pids
    channel = target.create_channel()
    row["base_mib"] = procstat.rss_bytes(pids()) / 2**20
    with Fleet(target.name, target.host, target.port, client_processes(options, count)) as fleet:
        started = time.monotonic()
        refused = fleet.open([channel], count, timeout_s=LP_TIMEOUT_S)
        row["open_s"] = time.monotonic() - started
        row["connected"] = count - refused
        row["refused"] = refused
        if refused:
            problems.append(f"{refused:,} connections failed")
        progress.advance()
        parked = wait_progress(
            lambda: parked_on(target, channel), count - refused, options.deadline_s
        )
        row["parked"] = parked
        if parked is None:
            problems.append("server stopped answering")
        elif parked < count - refused:
            problems.append(f"{parked:,} of {count - refused:,} parked")
        time.sleep(1.0)  # let the allocator settle before reading memory
        rss = procstat.rss_bytes(pids())
        row["smu_mib"] = rss / 2**20
        row["smu_pct"] = 100.0 * rss / machine_memory_bytes()
        row["threads"] = procstat.threads(pids())
        progress.advance()
        peak = rss
        for index in range(options.rounds):
            if index:
                wait_progress(
                    lambda: parked_on(target, channel), count - refused, options.deadline_s
                )
            fleet.stats(reset=True)
            seq = next(_seq)
            cpu_before = procstat.cpu_seconds(pids())
            published_at = time.monotonic()
            if not publish_one(target, channel, seq, options.payload_pad):
                problems.append(f"publication {index + 1} not acknowledged")
            wait_progress(received(fleet, seq), count - refused, options.deadline_s)
            waited_s = time.monotonic() - published_at
            stats = fleet.stats()
            # The server's CPU for the round: the publication, every answer, and every
            # re-poll parked again.
            wait_progress(lambda: parked_on(target, channel), count - refused, options.deadline_s)
            cpu_s = procstat.cpu_seconds(pids()) - cpu_before
            row["rounds"].append(_round(stats, seq, count, waited_s, cpu_s))
            peak = max(peak, procstat.rss_bytes(pids()))
            progress.advance()
        row["peak_mib"] = peak / 2**20


def _round(
    stats: FleetStats, seq: int, count: int, waited_s: float, cpu_s: float
) -> dict[str, Any]:
    return {
        "cpu_s": cpu_s,
        "delivered": min(stats.received.get(seq, 0), count),
        "trips_s": list(stats.trips_s),
        "errors": failures(stats),
        "statuses": {str(status): n for status, n in stats.statuses.items()},
        "waited_s": waited_s,
    }


def sum_rounds(row: dict[str, Any], count: int, options: Options, problems: list[str]) -> None:
    """MPT, the slowest delivery, RMP and errors over the rounds `measure_rounds` left
    in `row`, and its status: "ok", or every problem met."""
    rounds: list[dict[str, Any]] = row["rounds"]
    trips = [trip for r in rounds for trip in r.pop("trips_s")]
    delivered = sum(r["delivered"] for r in rounds)
    row["mpt_s"] = mean(trips)
    # Per delivery: its answer and the re-poll that parks again (with the round's one
    # publication spread over them).
    cpu_s = sum(r.get("cpu_s", 0.0) for r in rounds)
    row["server_us_per_repoll"] = 1e6 * cpu_s / delivered if delivered else None
    row["max_s"] = max(trips) if trips else None
    row["rmp_pct"] = 100.0 * delivered / (count * options.rounds) if options.rounds else None
    row["errors"] = row.get("refused", 0) + sum(r["errors"] for r in rounds)
    row["late"] = sum(1 for trip in trips if trip > LP_TIMEOUT_S)
    if len(rounds) < options.rounds:
        problems.append(f"{len(rounds)} of {options.rounds} rounds")
    if row["rmp_pct"] is not None and row["rmp_pct"] < 100:
        problems.append(f"RMP {row['rmp_pct']:.1f} %")
    if row["late"]:
        problems.append(
            f"{row['late']:,} deliveries slower than the {LP_TIMEOUT_S:g} s poll timeout "
            "(lost to a client that gives up then)"
        )
    row["status"] = "; ".join(problems) or "ok"


# -- checks, notes and plots -----------------------------------------------------------


def against_nchan(
    rows: list[dict[str, Any]], key: str
) -> Iterator[tuple[Any, dict[str, Any], dict[str, Any] | None]]:
    """Each value of `key` that PushUp has a row for, in order, with that row and
    Nchan's (None: Nchan has none)."""
    for value in sorted({row[key] for row in rows}):
        by_target = {row["target"]: row for row in rows if row[key] == value}
        ours = by_target.get("pushup")
        if ours is not None:
            yield value, ours, by_target.get("nchan")


def ratio(ours: dict[str, Any], theirs: dict[str, Any] | None, key: str) -> float | None:
    """PushUp's figure over Nchan's, when both have one (and Nchan's is not 0)."""
    if theirs and theirs.get(key) and ours.get(key) is not None:
        return float(ours[key] / theirs[key])
    return None


def text(value: float | None, spec: str, unit: str = "") -> str:
    """A figure for a note, or "n/a" when it is missing."""
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def line(rows: Iterable[dict[str, Any]], x: str, y: str, label: str, color_key: str = "") -> Series:
    """One plotted line: the rows' `y` against their `x`, in the order of `x`."""
    ordered = sorted(rows, key=lambda row: row[x])
    return Series(label, [row[x] for row in ordered], [row.get(y) for row in ordered], color_key)

"""`idle`: N parked long polls → server memory per parked poll, and CPU to park them."""

from __future__ import annotations

import time

from pushup.bench import procstat
from pushup.bench.fleet import Fleet
from pushup.bench.progress import Progress
from pushup.bench.run import Check, Run
from pushup.bench.scenarios.common import (
    Options,
    against_nchan,
    client_processes,
    ratio,
    running,
    subscribers_on,
    wait_until,
)

COLUMNS = [
    "target",
    "subscribers",
    "channels",
    "parked",
    "rss_base_mib",
    "rss_parked_mib",
    "bytes_per_parked",
    "park_cpu_s",
]

# Long enough to stay parked while memory is read; Nchan's own timeout is its config's.
_POLL_TIMEOUT_S = 250.0


def run(options: Options, progress: Progress) -> Run:
    result = Run(
        "idle",
        {
            "targets": list(options.targets),
            "subscribers": list(options.subscribers),
            "channels": options.channels,
        },
        COLUMNS,
    )
    for name in options.targets:
        for count in options.subscribers:
            progress.start(f"idle {name} {count:,}", 3)
            result.rows.append(_measure(name, count, options, progress))
    result.checks += _checks(result)
    return result


def _measure(name: str, count: int, options: Options, progress: Progress) -> dict[str, object]:
    with running(name) as target:
        channels = [target.create_channel() for _ in range(options.channels)]
        processes = client_processes(options, count)
        with Fleet(name, target.host, target.port, processes) as fleet:
            # Warm up: a few polls answered, so lazily built state is in the baseline.
            fleet.open(channels, 10, timeout_s=0.1)
            wait_until(lambda: fleet.stats().polls >= 30, 10)
            fleet.close()
        time.sleep(0.5)
        base_rss, base_cpu = procstat.rss_bytes(target.pids()), procstat.cpu_seconds(target.pids())
        progress.advance()
        with Fleet(name, target.host, target.port, processes) as fleet:
            failed = fleet.open(channels, count, timeout_s=_POLL_TIMEOUT_S)
            progress.advance()
            wait_until(
                lambda: subscribers_on(target, channels) >= count - failed, options.deadline_s
            )
            time.sleep(1.0)  # let the allocator settle before reading memory
            parked = subscribers_on(target, channels)
            rss = procstat.rss_bytes(target.pids())
            cpu = procstat.cpu_seconds(target.pids()) - base_cpu
            progress.advance()
    return {
        "target": name,
        "subscribers": count,
        "channels": options.channels,
        "parked": parked,
        "rss_base_mib": base_rss / 2**20,
        "rss_parked_mib": rss / 2**20,
        "bytes_per_parked": (rss - base_rss) / parked if parked else None,
        "park_cpu_s": cpu,
    }


def _checks(result: Run) -> list[Check]:
    checks = []
    for count, ours_row, theirs_row in against_nchan(result.rows, "subscribers"):
        ours = ours_row["bytes_per_parked"]
        if ours is None:
            continue
        theirs = theirs_row["bytes_per_parked"] if theirs_row else None
        share = ratio(ours_row, theirs_row, "bytes_per_parked")
        holds = None if share is None else (share <= 0.5 and ours < 5000)
        checks.append(
            Check(
                f"memory per parked poll at {count:,}",
                share,
                "≤ 0.5x Nchan and < 5 KB",
                holds,
                f"PushUp {ours:,.0f} B, Nchan {theirs:,.0f} B"
                if theirs
                else f"PushUp {ours:,.0f} B",
            )
        )
    return checks

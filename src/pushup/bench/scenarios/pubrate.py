"""`pubrate`: publications per second from keep-alive publishers, to one channel and
spread round-robin over many, while a few long-polling subscribers drain them.

The publishers run in several client processes. Each run reads the CPU used by the
server, by the client processes and by the whole machine. A run where the load
generator set the pace is flagged as client-bound, so that its figure is not taken for
the server's limit. Server CPU per publication is the figure that stays valid either way.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pushup.bench import procstat
from pushup.bench.fleet import Fleet, PublishResult
from pushup.bench.progress import Progress
from pushup.bench.run import Check, Run
from pushup.bench.scenarios.common import (
    Options,
    against_nchan,
    ratio,
    running,
    subscribers_on,
    text,
    wait_until,
)
from pushup.bench.stats import median
from pushup.bench.targets import Target

COLUMNS = [
    "target",
    "channels",
    "pubs_per_s",
    "server_us_per_pub",
    "server_cores",
    "client_cores",
    "client_cpu_pct",
    "client_bound",
    "other_cores",
    "acknowledged",
    "non_2xx",
    "errors",
    "sub_received",
    "sub_recv_pct",
]

DEFAULT_CHANNELS = 100  # the spread case; the one-channel case always runs too
WARMUP = 2_000
RUNS = 3
SUBSCRIBERS = 4  # long-polling subscribers draining each case
# Client processes using this share of the cores left to them set the pace themselves.
CLIENT_BOUND_SHARE = 0.90
_POLL_TIMEOUT_S = 50.0  # Nchan serves long polls of its configured 50 s only
_CONTENDED_CORES = 0.25  # busy cores outside server and clients that make a run "shared"
_DRAIN_S = 5.0  # how long subscribers may take to catch up after the last run
_TICKS = os.sysconf("SC_CLK_TCK")


def run(options: Options, progress: Progress) -> Run:
    cases = sorted({1, options.channels})
    publishers = options.publishers
    processes = max(1, min(options.client_processes, publishers))
    result = Run(
        "pubrate",
        {
            "targets": list(options.targets),
            "channels": cases,
            "publications": options.publications,
            "runs": RUNS,
            "warmup": _warmup(options),
            "publishers": publishers,
            "depth": options.depth,
            "publisher_processes": processes,
            "subscribers": SUBSCRIBERS,
            "cpus": _cpus(),
        },
        COLUMNS,
    )
    for name in options.targets:
        with (
            running(name, **_target_options(name, options)) as target,
            Fleet(name, target.host, target.port, processes) as fleet,
        ):
            failed = fleet.open_publishers(publishers)
            for count in cases:
                progress.start(f"pubrate {name} {count} ch", RUNS + 1)
                row = _measure(target, fleet, count, options, progress)
                row["errors"] += failed
                result.rows.append(row)
    result.notes += _notes(result)
    result.checks += _checks(result)
    return result


def _target_options(name: str, options: Options) -> dict[str, object]:
    """`--workers`, for the target whose workers share a private nats-server."""
    workers = options.extra.get("workers")
    return {"workers": int(workers)} if workers and name == "pushup-workers-nats" else {}


@dataclass
class _Cpu:
    """CPU seconds used so far: server tree, publisher and subscriber processes, machine."""

    at: float
    server: float
    publishers: float
    subscribers: float
    machine: float

    @classmethod
    def read(cls, target: Target, publishers: Fleet, subscribers: Fleet) -> _Cpu:
        return cls(
            time.monotonic(),
            procstat.cpu_seconds(target.pids()),
            procstat.cpu_seconds(publishers.pids()),
            procstat.cpu_seconds(subscribers.pids()),
            _machine_busy_s(),
        )


def _measure(
    target: Target, fleet: Fleet, count: int, options: Options, progress: Progress
) -> dict[str, Any]:
    channels = [target.create_channel() for _ in range(count)]
    sub_channels = [channels[i % count] for i in range(SUBSCRIBERS)]
    runs: list[dict[str, Any]] = []
    seq = 1
    with Fleet(target.name, target.host, target.port, 1) as subscribers:
        sub_failed = subscribers.open(channels, SUBSCRIBERS, timeout_s=_POLL_TIMEOUT_S)
        parked = wait_until(
            lambda: subscribers_on(target, sorted(set(sub_channels))) >= SUBSCRIBERS - sub_failed,
            10,
        )
        warmup = _warmup(options)
        fleet.prepare_publications(channels, warmup, first_seq=seq, pad=options.payload_pad)
        warm = fleet.publish(options.depth, options.deadline_s)
        seq += warmup
        progress.advance()
        measured: list[range] = []
        for _ in range(RUNS):
            n = options.publications
            fleet.prepare_publications(channels, n, first_seq=seq, pad=options.payload_pad)
            before = _Cpu.read(target, fleet, subscribers)
            published = fleet.publish(options.depth, options.deadline_s)
            after = _Cpu.read(target, fleet, subscribers)
            runs.append(_figures(published, before, after, fleet, subscribers))
            measured.append(range(seq, seq + n))
            seq += n
            progress.advance()
        expected = RUNS * _deliveries(options.publications, count, sub_channels, channels)
        received = _received(subscribers, measured)
        end = time.monotonic() + _DRAIN_S
        while received < expected and time.monotonic() < end:
            time.sleep(0.1)
            received = _received(subscribers, measured)
        sub_stats = subscribers.stats()
    bound = sum(1 for r in runs if r["client_bound"])
    rate = _median(runs, "pubs_per_s")
    # The run that gave the median rate: is the figure reported itself client-bound?
    median_run = min(runs, key=lambda r: abs(r["pubs_per_s"] - (rate or 0.0)))
    return {
        "target": target.name,
        "channels": count,
        "pubs_per_s": rate,
        "server_us_per_pub": _median(runs, "server_us_per_pub"),
        "server_cores": _median(runs, "server_cores"),
        "client_cores": _median(runs, "client_cores"),
        "client_cpu_pct": _median(runs, "client_cpu_pct"),
        "client_bound": _bound_cell(median_run["client_bound"], bound, len(runs)),
        "client_bound_runs": bound,
        "median_run_client_bound": median_run["client_bound"],
        "client_cpu_pct_max": max(r["client_cpu_pct"] for r in runs),
        "other_cores_max": max(r["other_cores"] for r in runs),
        "other_cores": _median(runs, "other_cores"),
        "publications": RUNS * options.publications,
        "acknowledged": sum(r["acknowledged"] for r in runs),
        "non_2xx": sum(r["non_2xx"] for r in runs) + warm.non_2xx,
        # Which statuses they were, over the warm-up and the runs: a refusal is a finding.
        "non_2xx_statuses": dict(
            sum((Counter(r["non_2xx_statuses"]) for r in runs), Counter(_refused(warm)))
        ),
        "errors": sum(r["errors"] for r in runs) + warm.errors,
        "timed_out": any(r["timed_out"] for r in runs) or warm.timed_out,
        "warmup_acknowledged": warm.acknowledged,
        "sub_received": received,
        "sub_expected": expected,
        "sub_recv_pct": 100.0 * received / expected if expected else None,
        "sub_parked": parked,
        "sub_polls": sub_stats.polls,
        "sub_errors": sub_stats.errors + sub_failed,
        "per_run": runs,
    }


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    """The median of one figure over the runs that have it (None: no run has it)."""
    return median([r[key] for r in runs if r[key] is not None])


def _bound_cell(median_bound: bool, bound: int, runs: int) -> str:
    """The table cell: whether the reported (median) run was client-bound, and how many were."""
    if median_bound:
        return f"**yes** ({bound}/{runs} runs)"
    return f"no ({bound}/{runs} runs were)" if bound else "no"


def _warmup(options: Options) -> int:
    """2,000 publications, or fewer for tiny runs (tests)."""
    return min(WARMUP, options.publications)


def _figures(
    published: PublishResult, before: _Cpu, after: _Cpu, publishers: Fleet, subscribers: Fleet
) -> dict[str, Any]:
    """One run's rate, CPU per publication, and whether the clients set the pace."""
    window = max(after.at - before.at, 1e-9)
    server = after.server - before.server
    pub = after.publishers - before.publishers
    sub = after.subscribers - before.subscribers
    machine = after.machine - before.machine
    cpus = _cpus()
    # The cores the clients could have had: one per process at most, and no more than
    # the machine had left after the server and everything else running meanwhile.
    pub_share = _share(pub, publishers.processes, machine - pub, window, cpus)
    all_share = _share(
        pub + sub, publishers.processes + subscribers.processes, machine - pub - sub, window, cpus
    )
    share = max(pub_share, all_share)
    acknowledged = published.acknowledged
    return {
        "publications": published.requested,
        "acknowledged": acknowledged,
        "non_2xx": published.non_2xx,
        "non_2xx_statuses": _refused(published),
        "errors": published.errors,
        "timed_out": published.timed_out,
        "seconds": published.seconds,
        "pubs_per_s": published.per_second,
        "server_us_per_pub": 1e6 * server / acknowledged if acknowledged else None,
        "server_cores": server / window,
        "client_cores": (pub + sub) / window,
        "publisher_cores": pub / window,
        "machine_cores": machine / window,
        "other_cores": max(machine - server - pub - sub, 0.0) / window,
        "client_cpu_pct": 100.0 * share,
        "client_bound": share >= CLIENT_BOUND_SHARE,
    }


def _refused(published: PublishResult) -> dict[str, int]:
    """The answers that were not 2xx, by status."""
    return {str(k): n for k, n in published.statuses.items() if not 200 <= k < 300}


def _share(used_s: float, processes: int, others_s: float, window_s: float, cpus: int) -> float:
    """Share (0..1+) of the cores available to some client processes that they used."""
    available = min(float(processes), cpus - max(others_s, 0.0) / window_s)
    if available <= 0.05:  # nothing was left to them: the machine itself was full
        return 1.0
    return used_s / window_s / available


def _deliveries(publications: int, count: int, sub_channels: list[str], channels: list[str]) -> int:
    """Deliveries one run owes the subscribers: publication i went to channel i % count."""
    per_channel = Counter(i % count for i in range(publications))
    return sum(per_channel[channels.index(channel)] for channel in sub_channels)


def _received(subscribers: Fleet, measured: list[range]) -> int:
    """Deliveries the subscribers saw of the measured runs' publications."""
    received = subscribers.stats().received
    return sum(n for seq, n in received.items() if any(int(seq) in r for r in measured))


def _machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, _steal = fields
    return (user + nice + system + irq + softirq) / _TICKS


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _label(count: int) -> str:
    return "1 channel" if count == 1 else f"{count} channels"


def _notes(result: Run) -> list[str]:
    notes = [
        f"{result.params['cpus']} CPUs shared by the server and the load generator "
        f"({result.params['publisher_processes']} publisher processes, 1 subscriber process). "
        "client_cpu_pct is the CPU the client processes used, as a share of the cores left to "
        "them (one per process at most, minus what the server and everything else used). "
        f"At {CLIENT_BOUND_SHARE:.0%} or more a run is client-bound. other_cores is CPU used "
        "by the rest of the machine (other processes, interrupts) during the runs.",
        "server_us_per_pub is the server's CPU (all its processes) per acknowledged "
        f"publication, including serving the {SUBSCRIBERS} draining subscribers. It remains "
        "comparable when the publication rate is client-bound.",
    ]
    for row in result.rows:
        where = f"{row['target']}, {_label(row['channels'])}"
        if row["client_bound_runs"]:
            crowded = (
                f"; other processes used up to {row['other_cores_max']:.2f} cores meanwhile, so "
                "the shared machine, not the load generator alone, was full"
                if row["other_cores_max"] > _CONTENDED_CORES
                else ""
            )
            verdict = (
                f"the median run was one of them: {row['pubs_per_s']:,.0f} publications/s is "
                "a lower bound for the server"
                if row["median_run_client_bound"]
                else "the median run, whose rate is reported, was not"
            )
            notes.append(
                f"**{where}: the load generator was the bottleneck in "
                f"{row['client_bound_runs']}/{RUNS} runs** (client processes at up to "
                f"{row['client_cpu_pct_max']:.0f} % of the cores left to them{crowded}); "
                f"{verdict}."
            )
        if row["other_cores"] > _CONTENDED_CORES:
            notes.append(
                f"{where}: other processes kept {row['other_cores']:.2f} cores busy meanwhile: "
                "the machine was shared, so the rates are low; CPU per publication is less "
                "affected."
            )
        if row["acknowledged"] < row["publications"] or row["timed_out"]:
            notes.append(
                f"{where}: {row['acknowledged']:,} of {row['publications']:,} publications "
                f"acknowledged ({row['non_2xx']:,} non-2xx, {row['errors']:,} errors"
                + (", a run hit its deadline" if row["timed_out"] else "")
                + ")."
            )
        pct = row["sub_recv_pct"]
        if pct is not None and pct < 100.0:
            notes.append(
                f"{where}: the subscribers received {pct:.1f} % of the publications to their "
                f"channels ({row['sub_polls']:,} polls): they fell behind the publishers and "
                "the channel's message buffer dropped the rest"
                + (
                    " (Nchan answers a long poll with one message, so a subscriber needs "
                    "a request per message)."
                    if row["target"] == "nchan"
                    else "."
                )
            )
        if not row["sub_parked"]:
            notes.append(f"{where}: the subscribers were not all seen parked before publishing.")
    return notes


def _checks(result: Run) -> list[Check]:
    checks = []
    for count, ours, theirs in against_nchan(result.rows, "channels"):
        times = ratio(ours, theirs, "pubs_per_s")
        complete = ours["acknowledged"] == ours["publications"]
        holds = None if times is None else (times >= 1.0 and complete)
        note = f"PushUp {_rate(ours)}"
        if theirs:
            note += f"; Nchan {_rate(theirs)}"
        bound = [row["target"] for row in (ours, theirs) if row and row["median_run_client_bound"]]
        if bound:
            note += (
                f"; client-bound for {' and '.join(bound)}: the ratio compares the load "
                "generator's limits, not only the servers'"
            )
        checks.append(Check(f"publish rate, {_label(count)}", times, "≥ 1.0x Nchan", holds, note))
    return checks


def _rate(row: dict[str, Any]) -> str:
    cpu = text(row["server_us_per_pub"], ".1f")
    return f"{row['pubs_per_s'] or 0:,.0f}/s ({cpu} µs server CPU each)"

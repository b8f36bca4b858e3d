"""`fanout`: N parked subscribers on one channel, one publication, K rounds with re-polls
→ time until 50/99/100 % received, and the received message percentage (RMP)."""

from __future__ import annotations

import itertools

from pushup.bench.fleet import Fleet
from pushup.bench.progress import Progress
from pushup.bench.run import Check, Run
from pushup.bench.scenarios.common import (
    Options,
    against_nchan,
    client_processes,
    ms,
    parked_on,
    publish_one,
    ratio,
    received,
    running,
    text,
    wait_progress,
)
from pushup.bench.stats import median, percentile

COLUMNS = ["target", "subscribers", "rounds", "p50_ms", "p99_ms", "p100_ms", "rmp_pct"]

_POLL_TIMEOUT_S = 250.0
_seq = itertools.count(1)


def run(options: Options, progress: Progress) -> Run:
    result = Run(
        "fanout",
        {
            "targets": list(options.targets),
            "subscribers": list(options.subscribers),
            "rounds": options.rounds,
        },
        COLUMNS,
    )
    for name in options.targets:
        for count in options.subscribers:
            progress.start(f"fanout {name} {count:,}", options.rounds)
            result.rows.append(_measure(name, count, options, progress))
    result.checks += _checks(result)
    return result


def _measure(name: str, count: int, options: Options, progress: Progress) -> dict[str, object]:
    rounds: list[dict[str, float | None]] = []
    with running(name) as target:
        channel = target.create_channel()
        with Fleet(name, target.host, target.port, client_processes(options, count)) as fleet:
            fleet.open([channel], count, timeout_s=_POLL_TIMEOUT_S)
            for _ in range(options.rounds):
                wait_progress(lambda: parked_on(target, channel), count, options.deadline_s)
                fleet.stats(reset=True)
                seq = next(_seq)
                publish_one(target, channel, seq, options.payload_pad)
                wait_progress(received(fleet, seq), count, min(options.deadline_s, 60))
                stats = fleet.stats()
                trips = stats.trips_s
                rounds.append(
                    {
                        "p50_ms": ms(percentile(trips, 0.50)) if len(trips) * 2 >= count else None,
                        "p99_ms": ms(percentile(trips, 0.99))
                        if len(trips) * 100 >= count * 99
                        else None,
                        "p100_ms": ms(max(trips)) if len(trips) >= count else None,
                        "rmp_pct": 100.0 * stats.received.get(seq, 0) / count,
                    }
                )
                progress.advance()
    row: dict[str, object] = {"target": name, "subscribers": count, "rounds": len(rounds)}
    for key in ("p50_ms", "p99_ms", "p100_ms"):
        values = [r[key] for r in rounds]
        # A round where not everyone received has no such figure: the median is then missing.
        row[key] = None if None in values else median([v for v in values if v is not None])
    row["rmp_pct"] = min(r["rmp_pct"] or 0.0 for r in rounds) if rounds else 0.0
    row["per_round"] = rounds
    return row


def _checks(result: Run) -> list[Check]:
    checks = []
    for count, ours, theirs in against_nchan(result.rows, "subscribers"):
        times = ratio(ours, theirs, "p100_ms")
        holds = None if times is None else (times <= 1.0 and ours["rmp_pct"] == 100.0)
        note = f"PushUp p100 {text(ours['p100_ms'], '.0f')} ms, RMP {ours['rmp_pct']:.1f} %"
        if theirs:
            note += (
                f"; Nchan p100 {text(theirs['p100_ms'], '.0f')} ms, RMP {theirs['rmp_pct']:.1f} %"
            )
        checks.append(
            Check(
                f"fan-out to {count:,}: time to 100 %",
                times,
                "≤ 1.0x Nchan, RMP 100 %",
                holds,
                note,
            )
        )
    return checks

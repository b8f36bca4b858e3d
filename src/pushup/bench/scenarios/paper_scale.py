"""`paper-scale`: the paper's Figures 9-11, event-driven against thread-per-request.

The paper (section 4.3) holds 500 to 16,000 concurrent long-polling clients on an
event-driven server (ELP, PushUp) and a thread-per-request one (MLP) and reports server
memory (SMU), mean publish trip time (MPT) and received message percentage (RMP). Here
the same for `pushup` (ELP), `mlp` (MLP) and `nchan` (a reference the paper does not
have), each on a fresh server process for every connection count N:

- N keep-alive subscribers on one channel, long polling with the paper's 50 s timeout
  (not scaled: there is no publish interval here, and Nchan serves only that one);
- SMU: resident memory (VmRSS) of the server's whole process tree with the N polls
  parked (the MiB, and the share of this machine's MemTotal), read 1 s after they
  parked; the figure includes the server's own baseline, as the paper's does;
- `--rounds` publications to the channel, each carrying its send time, each sent once
  the re-polls of the previous one parked again (as `fanout`); MPT is the mean over
  every delivery of every round of the time from the publisher creating the message to
  a subscriber having parsed it, `max_s` the slowest delivery (slower than the poll
  timeout is flagged: the paper counts a message arriving after the timeout as lost,
  while these clients wait for the server's answer);
- RMP: deliveries (once each at most) / (N x rounds), against the N clients asked for,
  so a connection the server refused or dropped counts as messages lost.

A server that fails (refuses connections, drops them, cannot start a thread, answers
late or not at all) never stops the run: every wait is bounded by `deadline_s` and ends
early when progress stalls, and the row says what happened; "MLP is shown failing where
it fails". The kernel bounds each connection attempt (SYN retries), not this module.
"""

from __future__ import annotations

import pathlib
from typing import Any

from pushup.bench.progress import Progress
from pushup.bench.run import Check, Run
from pushup.bench.scenarios.common import (
    LP_TIMEOUT_S,
    Options,
    against_nchan,
    line,
    machine_memory_bytes,
    measure_rounds,
    ms,
    ratio,
    running,
    sum_rounds,
    text,
)

DEFAULT_TARGETS = ("pushup", "mlp", "nchan")
DEFAULT_SUBSCRIBERS = (500, 1000, 2000, 4000, 8000, 16000)
MPT_LIMIT = 1.5  # PushUp's MPT at most this many times Nchan's ...
REPOLL_CPU_LIMIT = 1.5  # ... and its server CPU per re-poll
CHECKED = (500, 16_000)  # ... over this range of connections (the paper's)
METHODS = {"pushup": "ELP", "mlp": "MLP", "nchan": "Nchan"}

COLUMNS = [
    "method",
    "target",
    "connections",
    "connected",
    "parked",
    "smu_mib",
    "smu_pct",
    "threads",
    "mpt_s",
    "max_s",
    "rmp_pct",
    "server_us_per_repoll",
    "errors",
    "status",
]


def run(options: Options, progress: Progress) -> Run:
    result = Run(
        "paper-scale",
        {
            "targets": list(options.targets),
            "connections": list(options.subscribers),
            "rounds": options.rounds,
            "poll_timeout_s": LP_TIMEOUT_S,
            "deadline_s": options.deadline_s,
        },
        COLUMNS,
    )
    for name in options.targets:
        for count in options.subscribers:
            progress.start(f"paper-scale {name} {count:,}", options.rounds + 2)
            row = _measure(name, count, options, progress)
            result.rows.append(row)
            if row["status"] != "ok":
                progress.note(f"{name} at {count:,}: {row['status']}")
    result.checks += _checks(result)
    result.notes += _notes(result)
    return result


def _measure(name: str, count: int, options: Options, progress: Progress) -> dict[str, Any]:
    row: dict[str, Any] = {
        "method": METHODS.get(name, name),
        "target": name,
        "connections": count,
        "connected": 0,
        "parked": None,
        "rounds": [],
    }
    problems: list[str] = []
    try:
        with running(name) as target:
            measure_rounds(target, count, options, progress, row, problems)
    except Exception as exc:  # a failure is a result here: record it, carry on
        problems.append(f"error: {exc!r}")
    sum_rounds(row, count, options, problems)
    return row


def _checks(result: Run) -> list[Check]:
    checks = []
    for count, ours, theirs in against_nchan(result.rows, "connections"):
        if not CHECKED[0] <= count <= CHECKED[1]:
            continue
        times = ratio(ours, theirs, "mpt_s")
        full = ours["rmp_pct"] == 100.0
        holds = (full and times <= MPT_LIMIT) if times is not None else (None if full else False)
        note = f"PushUp MPT {_mpt(ours)}, RMP {_rmp(ours)}"
        if theirs:
            note += f"; Nchan MPT {_mpt(theirs)}, RMP {_rmp(theirs)}"
        checks.append(
            Check(
                f"paper scale at {count:,}: PushUp MPT and RMP",
                times,
                f"MPT ≤ {MPT_LIMIT}x Nchan, RMP 100 %",
                holds,
                note,
            )
        )
        cpu = ratio(ours, theirs, "server_us_per_repoll")
        checks.append(
            Check(
                f"paper scale at {count:,}: server CPU per re-poll",
                cpu,
                f"≤ {REPOLL_CPU_LIMIT}x Nchan",
                None if cpu is None else cpu <= REPOLL_CPU_LIMIT,
                f"PushUp {_cpu(ours)}" + (f"; Nchan {_cpu(theirs)}" if theirs else ""),
            )
        )
    return checks


def _cpu(row: dict[str, Any]) -> str:
    return text(row["server_us_per_repoll"], ".1f", " µs")


def _mpt(row: dict[str, Any]) -> str:
    return text(ms(row["mpt_s"]), ".0f", " ms")


def _rmp(row: dict[str, Any]) -> str:
    return text(row["rmp_pct"], ".1f", " %")


def _notes(result: Run) -> list[str]:
    notes = [
        "SMU: resident memory of the server's process tree with every poll parked "
        f"(% of this machine's {machine_memory_bytes() / 2**30:.1f} GiB); MPT: mean time "
        "from creating a message to a subscriber parsing it, over every delivery of every "
        "round; RMP: deliveries / (connections asked for x rounds); server_us_per_repoll: "
        "the server's CPU (all its processes) per delivery, from each publication until "
        "every re-poll parked again: an answer written and a poll parked.",
        "The paper gives Figures 9-11 as plots only; its text says MLP's memory 'reaches "
        "100 %' (of 8 GB) at 8,000 connections and ELP 'significantly excels' MLP in MPT "
        "and RMP.",
        "MLP is shown failing where it fails: its rows say what went wrong.",
    ]
    for row in result.rows:
        if row["status"] != "ok":
            notes.append(f"{row['method']} at {row['connections']:,}: {row['status']}.")
    return notes


def plot(run: Run, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Figures 9, 10 and 11: SMU, MPT and RMP against connections, a line per server."""
    from pushup.bench.plots import line_figure

    if not run.rows:
        return []
    total_mib = machine_memory_bytes() / 2**20
    counts = sorted({row["connections"] for row in run.rows})
    names = list(dict.fromkeys(row["target"] for row in run.rows))
    paths = []
    figures = (
        (9, "server memory usage", "resident memory (MiB)", "smu_mib"),
        (10, "mean publish trip time", "MPT (s, log scale)", "mpt_s"),
        (11, "received message percentage", "RMP (%)", "rmp_pct"),
    )
    for figure, title, ylabel, key in figures:
        series = [
            line(
                (row for row in run.rows if row["target"] == name),
                "connections",
                key,
                f"{METHODS.get(name, name)} ({name})",
                name,
            )
            for name in names
        ]
        secondary = None
        if figure == 9:
            secondary = ("% of machine memory", 100.0 / total_mib)
        ylim = {9: (0.0, None), 10: None, 11: (0.0, 105.0)}[figure]
        paths.append(
            line_figure(
                out_dir / f"paper-scale-fig{figure}.png",
                f"Figure {figure}: {title}",
                "concurrent long-polling connections",
                ylabel,
                series,
                logx=len(counts) > 1,
                logy=figure == 10,
                xticks=counts,
                ylim=ylim,
                secondary_y=secondary,
                footnote=f"{run.params.get('rounds')} publications to all; "
                "missing points: nothing was received",
            )
        )
    return paths

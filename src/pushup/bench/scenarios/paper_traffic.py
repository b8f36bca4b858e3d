"""`paper-traffic`: the paper's Tables 1 and 2 and Figures 7 and 8, push against pull.

The paper (section 4.2) compares client pull (CP: a poll every 1 s answered at once)
with long polling (50 s poll timeout), thread-per-request (MLP) and event-driven (ELP),
for cc = 10, 100 and 1000 clients on one channel and a publication every 10 to 50 s.
Here each method runs on its own server process:

- CP: the `pushup` target, `timeout=0`, each client polling again 1 s after an answer,
  the clients' first polls spread over one poll interval (not a herd in lockstep);
- MLP: the `mlp` target (a thread parked per poll), 50 s poll timeout;
- ELP: the `pushup` target, 50 s poll timeout;
- Nchan: the `nchan` target, long polling, a reference the paper does not have.

Every interval and timeout is multiplied by `--time-scale` (publish interval, CP poll
interval, long-poll timeout), so a reduced run keeps the paper's ratios; except Nchan's
long-poll timeout, which is fixed per nginx location in whole seconds and stays 50 s
(its long polls then never time out inside a reduced run's window).

One measurement, for one (method, cc, publish interval I): a fresh channel, cc
keep-alive subscriber connections opened and polling (long polls parked on the server,
or every client having polled once), then a window of exactly P intervals (P =
`--rounds`, 3 by default) with one publication in the middle of each interval, each
carrying its send time (`loadgen.payload`). Measured:

- traffic (`kb`): HTTP bytes both ways, request and status lines, headers and bodies,
  counted at the subscribers' sockets during the window, divided by P: the traffic of
  one publish interval, in KB of 1,024 bytes. The publisher's own bytes are not
  counted (they are the same for every method), nor TCP/IP framing, and no connection
  is opened inside the window (keep-alive), which flatters CP if the paper's clients
  opened a connection per poll;
- `polls`: subscriber requests sent per interval, all clients together;
- MPT (`mpt_s`): the mean, over every delivery of the P publications, of the time from
  the publisher creating the message to a subscriber having parsed it (both clocks are
  this machine's);
- RMP (`rmp_pct`): the share of the cc x P (subscriber, publication) pairs delivered,
  at most once each, by the end of the window plus a grace period (all delivered, or
  10 s, or `deadline_s`);
- `cpu_pct`: the server's CPU time during the window, in % of one core (not in the
  paper; it is what pulling costs a server besides bytes).

Traffic does not depend on the time scale; CP's MPT does (its clients wait up to one
poll interval for a message), so only a full-scale run compares CP's MPT with the paper.
CP's request rate grows as 1 / time scale: at 0.05 and cc=1000 it is 20,000 polls/s,
more than a 2-core machine serves beside its load generator; a note says when `polls`
falls short of cc x interval / 1 s.
"""

from __future__ import annotations

import itertools
import pathlib
import time
from dataclasses import dataclass
from typing import Any

from pushup.bench import procstat
from pushup.bench.fleet import Fleet, FleetStats
from pushup.bench.progress import Progress
from pushup.bench.run import Run
from pushup.bench.scenarios.common import (
    LP_TIMEOUT_S,
    Options,
    failures,
    line,
    publish_one,
    running,
    wait_until,
)
from pushup.bench.stats import mean
from pushup.bench.targets import Target

DEFAULT_TARGETS = ("pushup", "mlp", "nchan")
DEFAULT_SUBSCRIBERS = (10, 100, 1000)
INTERVALS_S = (10, 20, 30, 40, 50)  # the paper's publish intervals; options.extra["intervals"]
CP_POLL_S = 1.0
KB = 1024
STAGGER_BATCHES = 10  # CP clients start in this many batches over one poll interval

COLUMNS = [
    "method",
    "target",
    "cc",
    "interval_s",
    "kb",
    "paper_kb",
    "polls",
    "mpt_s",
    "paper_mpt_s",
    "rmp_pct",
    "cpu_pct",
    "errors",
]

# The paper's Table 1 (network traffic, KB) and Table 2 (MPT, s), by method and cc,
# one value per publish interval of INTERVALS_S.
PAPER_KB: dict[tuple[str, int], tuple[float, ...]] = {
    ("CP", 10): (12.7, 25.8, 39.8, 55.2, 68.2),
    ("MLP", 10): (1.27, 1.27, 1.27, 1.27, 1.27),
    ("ELP", 10): (1.27, 1.27, 1.27, 1.27, 1.27),
    ("CP", 100): (127.4, 277.1, 415.2, 580.5, 745.5),
    ("MLP", 100): (12.7, 12.7, 12.7, 12.7, 13.1),
    ("ELP", 100): (12.7, 12.7, 12.7, 12.7, 12.7),
    ("CP", 1000): (1370.5, 3457.1, 5537.5, 7282.5, 10743.5),
    ("MLP", 1000): (135.5, 132.5, 137.8, 133.4, 135.5),
    ("ELP", 1000): (130.1, 129.5, 132.8, 131.8, 130.5),
}
PAPER_MPT_S: dict[tuple[str, int], tuple[float, ...]] = {
    ("CP", 10): (0.6, 0.7, 0.5, 0.7, 0.8),
    ("MLP", 10): (0.1, 0.0, 0.1, 0.2, 0.1),
    ("ELP", 10): (0.2, 0.1, 0.1, 0.4, 0.2),
    ("CP", 100): (0.8, 1.1, 2.5, 3.1, 2.7),
    ("MLP", 100): (0.5, 0.4, 0.5, 0.8, 1.1),
    ("ELP", 100): (0.7, 0.4, 0.8, 1.2, 0.9),
    ("CP", 1000): (2.8, 3.4, 4.5, 5.3, 7.2),
    ("MLP", 1000): (2.3, 2.9, 2.7, 3.5, 3.4),
    ("ELP", 1000): (2.4, 2.8, 1.8, 2.4, 2.9),
}

_seq = itertools.count(1_000_000)


@dataclass(frozen=True)
class Method:
    name: str  # as the paper names it (Nchan: ours)
    target: str
    pull: bool  # client pull (timeout 0, poll every CP_POLL_S) or long polling


METHODS = (
    Method("CP", "pushup", pull=True),
    Method("MLP", "mlp", pull=False),
    Method("ELP", "pushup", pull=False),
    Method("Nchan", "nchan", pull=False),
)
_ORDER = {method.name: i for i, method in enumerate(METHODS)}


def intervals(options: Options) -> tuple[float, ...]:
    """The nominal publish intervals (s): the paper's, or `extra["intervals"]` (a list)."""
    text = options.extra.get("intervals")
    if not text:
        return tuple(float(i) for i in INTERVALS_S)
    return tuple(float(part) for part in text.split(",") if part.strip())


def paper_value(
    table: dict[tuple[str, int], tuple[float, ...]], method: str, cc: int, interval_s: float
) -> float | None:
    """The paper's figure for this cell, where the paper has one."""
    values = table.get((method, cc))
    if values is None or interval_s not in INTERVALS_S:
        return None
    return values[INTERVALS_S.index(int(interval_s))]


def run(options: Options, progress: Progress) -> Run:
    nominal = intervals(options)
    methods = [method for method in METHODS if method.target in options.targets]
    scale = options.time_scale
    result = Run(
        "paper-traffic",
        {
            "targets": list(options.targets),
            "methods": [method.name for method in methods],
            "cc": list(options.subscribers),
            "intervals_s": list(nominal),
            "publications": options.rounds,
            "time_scale": scale,
            "cp_poll_s": CP_POLL_S * scale,
            "lp_timeout_s": LP_TIMEOUT_S * scale,
        },
        COLUMNS,
    )
    for method in methods:
        try:
            with running(method.target) as target:
                for cc in options.subscribers:
                    progress.start(f"paper-traffic {method.name} cc={cc:,}", len(nominal))
                    for interval_s in nominal:
                        result.rows.append(_measure_safely(target, method, cc, interval_s, options))
                        progress.advance()
        except Exception as exc:  # the server would not start: say so, go on
            result.notes.append(f"{method.name} ({method.target}) not measured: {exc!r}")
            progress.note(f"{method.name}: {exc!r}")
    result.rows.sort(key=lambda row: (row["cc"], _ORDER[row["method"]], row["interval_s"]))
    result.notes += _notes(result, options)
    return result


def _measure_safely(
    target: Target, method: Method, cc: int, interval_s: float, options: Options
) -> dict[str, Any]:
    """One cell; a failure becomes a row that says what happened, not a crashed run."""
    try:
        return _measure(target, method, cc, interval_s, options)
    except Exception as exc:
        row = _row(method, cc, interval_s)
        row["errors"] = None
        row["error"] = repr(exc)
        return row


def _row(method: Method, cc: int, interval_s: float) -> dict[str, Any]:
    return {
        "method": method.name,
        "target": method.target,
        "cc": cc,
        "interval_s": interval_s,
        "paper_kb": paper_value(PAPER_KB, method.name, cc, interval_s),
        "paper_mpt_s": paper_value(PAPER_MPT_S, method.name, cc, interval_s),
    }


def _measure(
    target: Target, method: Method, cc: int, interval_s: float, options: Options
) -> dict[str, Any]:
    scale = options.time_scale
    interval = interval_s * scale
    publications = options.rounds
    channel = target.create_channel()
    processes = max(1, min(options.client_processes, cc))
    with Fleet(target.name, target.host, target.port, processes) as fleet:
        if method.pull:
            failed = _open_staggered(fleet, channel, cc, CP_POLL_S * scale)
            ready = wait_until(lambda: fleet.stats().polls >= cc - failed, options.deadline_s)
        else:
            failed = fleet.open([channel], cc, timeout_s=_lp_timeout(method, scale))
            ready = wait_until(
                lambda: target.subscribers(channel) >= cc - failed, options.deadline_s
            )
        fleet.stats(reset=True)
        seqs = [next(_seq) for _ in range(publications)]
        cpu_before = procstat.cpu_seconds(target.pids())
        start = time.monotonic()
        for k, seq in enumerate(seqs):
            _sleep_until(start + (k + 0.5) * interval)
            publish_one(target, channel, seq, options.payload_pad)
        _sleep_until(start + publications * interval)
        window = fleet.stats()
        window_s = time.monotonic() - start
        cpu_s = procstat.cpu_seconds(target.pids()) - cpu_before
        grace = min(options.deadline_s, 10.0)
        wait_until(lambda: _delivered(fleet.stats(), seqs, cc) >= cc * publications, grace)
        final = fleet.stats()
    delivered = _delivered(final, seqs, cc)
    row = _row(method, cc, interval_s)
    row.update(
        {
            "kb": (window.bytes_in + window.bytes_out) / KB / publications,
            "polls": window.polls / publications,
            "expected_polls": cc * interval_s / CP_POLL_S if method.pull else cc,
            "mpt_s": mean(final.trips_s),
            "cpu_pct": 100.0 * cpu_s / window_s,
            "rmp_pct": 100.0 * delivered / (cc * publications),
            "errors": failed + failures(final),
            "bytes_in": window.bytes_in,
            "bytes_out": window.bytes_out,
            "window_s": window_s,
            "interval_run_s": interval,
            "poll_timeout_s": 0.0 if method.pull else _lp_timeout(method, scale),
            "publications": publications,
            "ready": ready,
            "statuses": {str(status): n for status, n in final.statuses.items()},
        }
    )
    return row


def _open_staggered(fleet: Fleet, channel: str, cc: int, poll_s: float) -> int:
    """Open the CP clients in batches spread over one poll interval; how many failed.

    Opened at once, every client would poll at the same instant, forever (each polls
    again a fixed interval after its answer): a thundering herd no real set of pulling
    browsers makes, which would measure the herd instead of client pull.
    """
    batches = min(cc, STAGGER_BATCHES)
    start = time.monotonic()
    failed = 0
    for index in range(batches):
        share = cc // batches + (index < cc % batches)
        failed += fleet.open([channel], share, timeout_s=0, interval_s=poll_s)
        _sleep_until(start + (index + 1) * poll_s / batches)
    return failed


def _lp_timeout(method: Method, scale: float) -> float:
    """The long-poll timeout: scaled, but Nchan serves only its configured 50 s."""
    return LP_TIMEOUT_S if method.target == "nchan" else LP_TIMEOUT_S * scale


def _delivered(stats: FleetStats, seqs: list[int], cc: int) -> int:
    """(subscriber, publication) pairs delivered, each counted once at most."""
    return sum(min(stats.received.get(seq, 0), cc) for seq in seqs)


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def _notes(result: Run, options: Options) -> list[str]:
    notes = [
        "Traffic: HTTP bytes both ways (request/status lines, headers, bodies) counted at the "
        "subscribers during P publish intervals, divided by P; KB = 1,024 bytes; the "
        "publisher's bytes and TCP/IP framing are not counted; keep-alive connections, "
        "opened before the window.",
        "MPT: mean time from the publisher creating a message to a subscriber parsing it; "
        "RMP: deliveries / (cc x P), within the window plus a grace period.",
        "paper_kb and paper_mpt_s: the paper's Tables 1 and 2 (PEACE cluster, 4 cores, "
        "1 s pull, 50 s long-poll timeout); Nchan is a reference the paper does not have.",
    ]
    if options.time_scale != 1.0:
        notes.append(
            f"Time scale {options.time_scale:g}: intervals, CP's poll interval and the "
            "long-poll timeout all shrunk alike; traffic per interval keeps the paper's "
            "ratios, CP's MPT does not (a CP client waits up to one poll interval), and CP "
            f"sends {1 / options.time_scale:g}x the paper's requests per second. Nchan's "
            "long-poll timeout stays 50 s (fixed per nginx location, whole seconds)."
        )
    failed = [row for row in result.rows if row.get("error")]
    for row in failed:
        notes.append(
            f"{row['method']} cc={row['cc']:,} interval {row['interval_s']:g} s failed: "
            f"{row['error']}"
        )
    for row in result.rows:
        polls, expected = row.get("polls"), row.get("expected_polls")
        if polls is None or expected is None:
            continue
        if row["method"] == "CP" and polls < 0.9 * expected:
            notes.append(
                f"CP cc={row['cc']:,} interval {row['interval_s']:g} s: {polls:,.0f} polls "
                f"per interval, {100 * polls / expected:.0f} % of the {expected:,.0f} a 1 s "
                "pull makes: the server or the load generator did not keep up (each client "
                "polls again one interval after its answer, so a slow answer delays it)."
            )
    lossy = [row for row in result.rows if row.get("rmp_pct") is not None and row["rmp_pct"] < 100]
    for row in lossy:
        notes.append(
            f"{row['method']} cc={row['cc']:,} interval {row['interval_s']:g} s: "
            f"RMP {row['rmp_pct']:.1f} %, {row['errors']} errors."
        )
    return notes


def plot(run: Run, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Figures 7 and 8 at cc = 1000 (or the largest cc run): ours solid, the paper's dashed."""
    from pushup.bench.plots import Series, line_figure

    if not run.rows:
        return []
    counts = sorted({row["cc"] for row in run.rows})
    cc = 1000 if 1000 in counts else counts[-1]
    rows = [row for row in run.rows if row["cc"] == cc]
    methods = sorted({row["method"] for row in rows}, key=lambda name: _ORDER[name])
    scale = run.params.get("time_scale", 1.0)
    paths = []
    for figure, key, table, ylabel, logy in (
        (7, "kb", PAPER_KB, "traffic per publish interval (KB, log scale)", True),
        (8, "mpt_s", PAPER_MPT_S, "mean publish trip time (s, log scale)", True),
    ):
        series = [
            line((row for row in rows if row["method"] == name), "interval_s", key, name, name)
            for name in methods
        ]
        for name in methods:
            if (name, cc) in table:
                xs = [float(i) for i in INTERVALS_S]
                ys: list[float | None] = [paper_value(table, name, cc, x) for x in xs]
                series.append(Series(f"{name} (paper)", xs, ys, name, paper=True))
        title = (
            f"Figure {figure}: {'network traffic' if figure == 7 else 'MPT'}, "
            f"pull vs push, cc={cc:,}"
        )
        path = out_dir / f"paper-traffic-fig{figure}.png"
        paths.append(
            line_figure(
                path,
                title,
                "publish interval (s, paper scale)",
                ylabel,
                series,
                logy=logy,
                xticks=sorted({row["interval_s"] for row in rows} | set(map(float, INTERVALS_S))),
                footnote=f"time scale {scale:g}; dashed: the paper's Table "
                f"{1 if figure == 7 else 2}",
            )
        )
    return paths

"""`cluster`: the paper's Figures 12 and 13, PushUp on 1 to 4 nodes behind HAProxy.

The paper (section 4.4) puts 2, 3 and 4 PushUp servers behind HAProxy with round robin
and reports mean publish trip time (MPT) and received message percentage (RMP) against
concurrent connections. Here each (nodes, N) cell gets a fresh cluster (`ClusterTarget`:
one redis-server, `nodes` `pushup serve` processes on the Redis engine, HAProxy from
deploy/haproxy.cfg, enough HAProxy processes on one port for 2N sockets) and is measured
exactly as `paper-scale` measures one server: N keep-alive subscribers long polling
(50 s) through the balancer, then `--rounds` publications, also through the balancer,
each once the re-polls of the previous one parked again.

Every node counts only its own parked polls, so the parked total is their sum, and the
row keeps each node's count to show how evenly the balancer spread the load. All
processes share this machine's cores, unlike the paper's one machine per node: more
nodes cannot add CPU here, so the figures show the cost of the balancer and of Redis
propagation rather than the paper's near-linear speed-up.
"""

from __future__ import annotations

import pathlib
from typing import Any

from pushup.bench import procstat
from pushup.bench.progress import Progress
from pushup.bench.run import Check, Run
from pushup.bench.scenarios.cluster_costs import COLUMNS as cost_columns
from pushup.bench.scenarios.cluster_costs import PUBLICATIONS, publication_costs
from pushup.bench.scenarios.common import (
    LP_TIMEOUT_S,
    Options,
    line,
    measure_rounds,
    sum_rounds,
    text,
)
from pushup.bench.targets.cluster import ClusterTarget
from pushup.bench.targets.haproxy import processes_for

# No `--target`: the deployment measured is built here, from `--nodes`.
DEFAULT_TARGETS: tuple[str, ...] = ()
DEFAULT_SUBSCRIBERS = (500, 1000, 2000, 4000, 8000, 16000)
DEFAULT_NODES = (1, 2, 3, 4)

COLUMNS = [
    "engine",
    "nodes",
    "connections",
    "connected",
    "parked",
    "node_parked",
    "mpt_s",
    "max_s",
    "rmp_pct",
    "server_us_per_repoll",
    "engine_us_per_repoll",
    *cost_columns,
    "errors",
    "status",
]


def node_counts(options: Options) -> tuple[int, ...]:
    """`--nodes`, as the command line passed it on (comma-separated)."""
    value = options.extra.get("nodes")
    if not value:
        return DEFAULT_NODES
    return tuple(int(part) for part in value.split(",") if part)


def engines(options: Options) -> tuple[str, ...]:
    """`--engine`: the shared engines to measure, in turn (default: Redis)."""
    value = options.extra.get("engine")
    return tuple(value.split(",")) if value else ("redis",)


def run(options: Options, progress: Progress) -> Run:
    nodes = node_counts(options)
    result = Run(
        "cluster",
        {
            "engines": list(engines(options)),
            "nodes": list(nodes),
            "connections": list(options.subscribers),
            "rounds": options.rounds,
            "poll_timeout_s": LP_TIMEOUT_S,
            "deadline_s": options.deadline_s,
        },
        COLUMNS,
    )
    for engine in engines(options):
        for count in nodes:
            for connections in options.subscribers:
                label = f"cluster {engine} {_nodes(count)} {connections:,}"
                progress.start(label, options.rounds + 2)
                row = _measure(engine, count, connections, options, progress)
                result.rows.append(row)
                if row["status"] != "ok":
                    progress.note(f"{label}: {row['status']}")
    result.checks += _checks(result)
    result.notes += _notes(result)
    return result


def _measure(
    engine: str, nodes: int, count: int, options: Options, progress: Progress
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "engine": engine,
        "nodes": nodes,
        "connections": count,
        "balancers": processes_for(count),
        "connected": 0,
        "parked": None,
        "rounds": [],
    }
    problems: list[str] = []
    target = ClusterTarget(nodes=nodes, balancers=row["balancers"], engine=engine)
    try:
        target.start()
        engine_cpu = _cpu(target.engine_server.pid)
        measure_rounds(target, count, options, progress, row, problems)
        row["parked_per_node"] = list(target.spread)
        if target.engine_server.pid is not None:
            row["engine_mib"] = procstat.rss_bytes([target.engine_server.pid]) / 2**20
            polls = count * (options.rounds + 1)  # the first polls, then each round's
            if engine_cpu is not None and polls:
                used = (_cpu(target.engine_server.pid) or engine_cpu) - engine_cpu
                row["engine_us_per_repoll"] = used / polls * 1e6
        row.update(publication_costs(target))
        if target.proxy is not None:
            row["sessions_per_node"] = list(target.proxy.sessions().values())
    except Exception as exc:  # a failure is a result here: record it, carry on
        problems.append(f"error: {exc!r}")
    finally:
        target.stop()
    spread = row.get("parked_per_node") or []
    row["node_parked"] = " / ".join(text(n, ",") for n in spread) or None
    sum_rounds(row, count, options, problems)
    return row


def _cpu(pid: int | None) -> float | None:
    """CPU seconds the engine's server (redis-server, nats-server) used so far."""
    return None if pid is None else procstat.cpu_seconds([pid])


def _checks(result: Run) -> list[Check]:
    if not result.rows:
        return []
    worst = min(result.rows, key=lambda row: row["rmp_pct"])
    full = all(row["rmp_pct"] == 100.0 for row in result.rows)
    note = (
        "every cell"
        if full
        else f"lowest: {worst['rmp_pct']:.1f} % with {_nodes(worst['nodes'])} "
        f"on {worst['engine']} at {worst['connections']:,} connections"
    )
    return [Check("RMP at every (nodes, connections)", worst["rmp_pct"], "100 %", full, note)]


def _notes(result: Run) -> list[str]:
    notes = [
        "MPT: mean time from creating a message to a subscriber parsing it, over every "
        "delivery of every round; RMP: deliveries / (connections asked for x rounds); "
        "node_parked: polls parked on each node as that node counts them, with all parked; "
        "engine_us_per_repoll: CPU of the engine's server (redis-server or nats-server) "
        "over the first polls and the rounds, per poll, publications included; "
        "engine_us_per_pub, nodes_us_per_pub, copies_per_pub: after the rounds, "
        f"{PUBLICATIONS:,} publications through the balancer to channels no poll is "
        "parked on, the CPU of the engine's server and of all nodes together per "
        "publication, and the copies of each the nodes heard.",
        "Every node, Redis, HAProxy and the load generator share this machine's cores "
        "(the paper had a machine per node), so adding nodes adds balancing and Redis "
        "propagation, not CPU.",
    ]
    for row in result.rows:
        if row["status"] != "ok":
            where = f"{_nodes(row['nodes'])} on {row['engine']} at {row['connections']:,}"
            notes.append(f"{where}: {row['status']}.")
    return notes


def _nodes(count: int) -> str:
    return f"{count} node{'s' if count != 1 else ''}"


def plot(run: Run, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Figures 12 and 13: MPT and RMP against connections, a line per node count."""
    from pushup.bench.plots import line_figure

    if not run.rows:
        return []
    counts = sorted({row["connections"] for row in run.rows})
    paths = []
    figures = (
        (12, "mean publish trip time", "MPT (s, log scale)", "mpt_s"),
        (13, "received message percentage", "RMP (%)", "rmp_pct"),
    )
    for figure, title, ylabel, key in figures:
        series = [
            line(
                (row for row in run.rows if (row["nodes"], row.get("engine", "redis")) == cell),
                "connections",
                key,
                f"{_nodes(cell[0])}, {cell[1]}",
            )
            for cell in sorted({(row["nodes"], row.get("engine", "redis")) for row in run.rows})
        ]
        paths.append(
            line_figure(
                out_dir / f"cluster-fig{figure}.png",
                f"Figure {figure}: {title}, PushUp nodes behind HAProxy",
                "concurrent long-polling connections",
                ylabel,
                series,
                logx=len(counts) > 1,
                logy=figure == 12,
                xticks=counts,
                ylim=None if figure == 12 else (0.0, 105.0),
                footnote=f"{run.params.get('rounds')} publications to all through the "
                "balancer; missing points: nothing was received",
            )
        )
    return paths

"""What one publication costs each part of a cluster, for `docs/benchmarks.md`'s
extrapolation to more nodes, subscribers and publications than this machine holds.

After a cell's rounds, `PUBLICATIONS` publications go through the balancer from
keep-alive connections, spread over `CHANNELS` channels no poll is parked on. Read
around them: the CPU of the engine's server and of the PushUp nodes, and how many
copies the nodes heard (`/health`'s `received_publications`). On Redis every node hears
every publication; on NATS a node hears only the channels it serves, so here none.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pushup.bench import procstat
from pushup.bench.fleet import Publishers
from pushup.bench.targets.cluster import ClusterTarget
from pushup.bench.targets.process import http_json

PUBLICATIONS = 2_000
CHANNELS = 64
CONNECTIONS = 8
_SETTLE_S = 5.0  # how long the nodes may take to hear the last copies

COLUMNS = ["engine_us_per_pub", "nodes_us_per_pub", "copies_per_pub"]


def publication_costs(target: ClusterTarget, publications: int = PUBLICATIONS) -> dict[str, Any]:
    """Per publication: `engine_us_per_pub` (the engine's server), `nodes_us_per_pub`
    (every node together), `copies_per_pub` (publications the nodes heard, summed)."""
    channels = [target.create_channel() for _ in range(CHANNELS)]
    engine_pid = target.engine_server.pid
    node_pids = [pid for node in target.nodes for pid in node.pids()]
    heard_before = _heard(target)
    engine_before = procstat.cpu_seconds([engine_pid]) if engine_pid else 0.0
    nodes_before = procstat.cpu_seconds(node_pids)
    result = asyncio.run(_publish(target, channels, publications))
    acknowledged = int(result["acknowledged"])
    expected = None if target.engine == "nats" else acknowledged * len(target.nodes)
    heard = _settled(target, heard_before, expected)
    engine_used = (procstat.cpu_seconds([engine_pid]) if engine_pid else 0.0) - engine_before
    nodes_used = procstat.cpu_seconds(node_pids) - nodes_before
    per = max(acknowledged, 1)
    return {
        "cost_publications": publications,
        "cost_acknowledged": acknowledged,
        "cost_pubs_per_s": acknowledged / max(result["finished"] - result["started"], 1e-9),
        "engine_us_per_pub": engine_used / per * 1e6,
        "nodes_us_per_pub": nodes_used / per * 1e6,
        "copies_per_pub": heard / per,
    }


async def _publish(target: ClusterTarget, channels: list[str], count: int) -> dict[str, Any]:
    publishers = Publishers(target, "127.0.0.2")
    try:
        await publishers.open(CONNECTIONS)
        publishers.prepare(channels, 0, count, 1, 0)
        return await publishers.publish(1, 120.0)
    finally:
        publishers.close()


def _heard(target: ClusterTarget) -> list[int]:
    """Each node's `received_publications` so far."""
    counts = []
    for node in target.nodes:
        status, body = http_json(target.host, node.port, "GET", "/health")
        engine = body.get("engine", {}) if status == 200 and isinstance(body, dict) else {}
        counts.append(int(engine.get("received_publications", 0)))
    return counts


def _settled(target: ClusterTarget, before: list[int], expected: int | None) -> int:
    """Copies heard since `before`, once `expected` are, or no more arrive."""
    deadline = time.monotonic() + _SETTLE_S
    last = -1
    while True:
        heard = sum(now - then for now, then in zip(_heard(target), before, strict=True))
        done = heard >= expected if expected is not None else heard == last
        if done or time.monotonic() > deadline:
            return heard
        last = heard
        time.sleep(0.2)

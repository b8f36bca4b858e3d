"""The `cluster` and `capacity` scenarios in tiny runs against the real processes.

`cluster` runs redis-server, PushUp nodes and HAProxy (from deploy/haproxy.cfg);
`capacity` runs PushUp with several workers on Redis and Nchan with several workers.
These check that each runs end to end through `pushup bench`, writes its JSON, Markdown
and plots, that every subscriber receives every publication, and that a target failing
to start is a row saying so. They assert no timing.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest

from pushup.bench.progress import QuietProgress
from pushup.bench.scenarios import capacity, cluster
from pushup.bench.scenarios.common import Options
from pushup.bench.targets.haproxy import DEPLOY_CONFIG, haproxy_config, processes_for

PNG = b"\x89PNG\r\n\x1a\n"


def _bench(*args: str, out: pathlib.Path) -> dict[str, Any]:
    """Run `pushup bench` in a process of its own; the scenario's saved JSON."""
    scenario = args[0]
    result = subprocess.run(
        [sys.executable, "-m", "pushup", "bench", *args, "--quiet", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / f"{scenario}.md").read_text().startswith(f"### `{scenario}`")
    saved: dict[str, Any] = json.loads((out / f"{scenario}.json").read_text())
    return saved


def _assert_pngs(out: pathlib.Path, names: list[str]) -> None:
    for name in names:
        assert (out / name).read_bytes().startswith(PNG), name


def test_cluster_tiny_run(tmp_path: pathlib.Path) -> None:
    saved = _bench(
        "cluster",
        *("--nodes", "1,2", "--subscribers", "20,40", "--rounds", "1"),
        *("--client-processes", "1"),
        out=tmp_path,
    )
    rows = saved["rows"]
    assert [(row["nodes"], row["connections"]) for row in rows] == [
        (1, 20),
        (1, 40),
        (2, 20),
        (2, 40),
    ]
    for row in rows:
        assert row["status"] == "ok", row
        assert row["connected"] == row["parked"] == row["connections"]
        assert row["rmp_pct"] == 100.0 and row["errors"] == 0
        assert row["mpt_s"] is not None
        # Each node counts its own polls; together, all of them.
        spread = row["parked_per_node"]
        assert len(spread) == row["nodes"] and sum(spread) == row["parked"]
        if row["nodes"] == 2:  # round robin: both nodes hold polls
            assert min(spread) > 0, spread
    [check] = saved["checks"]
    assert check["holds"] is True
    _assert_pngs(tmp_path, ["cluster-fig12.png", "cluster-fig13.png"])


def test_cluster_on_both_shared_engines(tmp_path: pathlib.Path) -> None:
    saved = _bench(
        "cluster",
        *("--engine", "redis,nats", "--nodes", "2", "--subscribers", "20", "--rounds", "1"),
        *("--client-processes", "1"),
        out=tmp_path,
    )
    rows = saved["rows"]
    assert [(row["engine"], row["nodes"]) for row in rows] == [("redis", 2), ("nats", 2)]
    for row in rows:
        assert row["status"] == "ok", row
        assert row["rmp_pct"] == 100.0 and row["errors"] == 0
        # CPU is read in clock ticks: a tiny run may round to zero, never go missing.
        assert row["engine_us_per_repoll"] >= 0 and row["engine_mib"] > 0
        assert row["cost_acknowledged"] == row["cost_publications"]
        assert row["engine_us_per_pub"] > 0 and row["nodes_us_per_pub"] > 0
    # Every Redis node hears every publication; a NATS node only the channels it serves
    # (here, none of the channels published to).
    redis_row, nats_row = rows
    assert redis_row["copies_per_pub"] == 2 and nats_row["copies_per_pub"] == 0


def _nchan_available() -> bool:
    from pushup.bench.nchan import NCHAN_MODULE, NGINX

    return os.path.exists(NGINX) and os.path.exists(NCHAN_MODULE)


def test_capacity_tiny_run(tmp_path: pathlib.Path) -> None:
    targets = ["pushup", "nchan"] if _nchan_available() else ["pushup"]
    saved = _bench(
        "capacity",
        *[arg for name in targets for arg in ("--target", name)],
        *("--workers", "2", "--subscribers", "50", "--rounds", "1"),
        *("--client-processes", "1"),
        out=tmp_path,
    )
    assert saved["params"]["workers"] == 2
    assert [row["target"] for row in saved["rows"]] == targets
    for row in saved["rows"]:
        assert row["status"] == "ok", row
        assert row["connected"] == row["parked"] == 50
        assert row["rmp_pct"] == 100.0 and row["errors"] == 0
        assert row["p100_ms"] is not None and row["p50_ms"] <= row["p100_ms"]
        assert row["rss_mib"] > 0 and row["pss_mib"] > 0
        # Both workers hold descriptors (the kernel spreads connections over them).
        assert len(row["worker_fds"]) == 2 and row["max_worker_fds"] < capacity.SOCKET_LIMIT
        if row["target"] == "pushup":
            assert row["redis_mib"] > 0
            assert sum(row["worker_parked"]) == 50 and len(row["worker_parked"]) == 2
    assert saved["checks"] == []  # 50 subscribers: the 100,000 target is not judged
    _assert_pngs(tmp_path, ["capacity-memory.png", "capacity-fanout.png", "capacity-rmp.png"])


def test_a_target_that_fails_to_start_is_a_row_saying_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: object) -> None:
        raise RuntimeError("cannot start")

    monkeypatch.setattr(cluster.ClusterTarget, "start", broken)
    monkeypatch.setattr(capacity.WorkersTarget, "start", broken)
    options = Options(targets=("pushup",), subscribers=(100,), rounds=2, extra={"nodes": "2"})
    for module in (cluster, capacity):
        run = module.run(options, QuietProgress())
        [row] = run.rows
        assert row["status"].startswith("error: RuntimeError('cannot start')"), row
        assert row["rmp_pct"] == 0.0 and row["connected"] == 0
        assert any("at 100" in note for note in run.notes)
    [check] = cluster._checks(cluster.run(options, QuietProgress()))
    assert check.holds is False


def test_haproxy_config_is_the_shipped_file_with_the_runs_nodes() -> None:
    shipped = DEPLOY_CONFIG.read_text()
    config = haproxy_config(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003", "h:4"])
    servers = [line.strip() for line in config.splitlines() if line.strip().startswith("server")]
    # Each process connects to the nodes from its own address (see HAProxyGroup).
    source = 'source "${PUSHUP_SOURCE}"'
    assert servers == [
        f"server node1 127.0.0.1:7001 {source}",
        f"server node2 127.0.0.1:7002 {source}",
        f"server node3 127.0.0.1:7003 {source}",
        f"server node4 h:4 {source}",
    ]
    # Everything else as shipped: balancing, checks, timeouts.
    settings = [line for line in config.splitlines() if not line.lstrip().startswith("#")]
    assert not any("PUSHUP_NODE" in line for line in settings)
    kept = [line for line in shipped.splitlines() if "PUSHUP_NODE" not in line.split("#")[0]]
    assert kept == [line for line in config.splitlines() if not line.lstrip().startswith("server")]
    assert "balance roundrobin" in config and "option httpchk GET /health" in config
    assert [processes_for(n) for n in (1, 9_000, 9_001, 16_000, 40_000)] == [1, 1, 2, 2, 5]


def test_bench_rejects_a_bad_node_list() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pushup", "bench", "cluster", "--nodes", "two"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "whole numbers" in result.stderr


def test_bench_rejects_an_unknown_engine() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pushup", "bench", "cluster", "--engine", "mongo"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--engine" in result.stderr and "redis, nats" in result.stderr

"""The `pushup-workers-nats` benchmark target: `pushup serve --workers N` without
--engine, its workers sharing a private nats-server; `pubrate` measures it with
`--workers`. No timing is asserted."""

from __future__ import annotations

import glob
import os
import tempfile

from pushup.bench import procstat
from pushup.bench.progress import QuietProgress
from pushup.bench.scenarios import pubrate
from pushup.bench.scenarios.common import Options
from pushup.bench.targets import TARGET_CHOICES, TARGET_NAMES
from pushup.bench.targets.workers import NatsWorkersTarget


def _data_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "pushup-bench-data-*")))


def _nats_servers(pids: list[int]) -> list[int]:
    found = []
    for pid in procstat.tree(pids):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"nats-server" in f.read():
                    found.append(pid)
        except FileNotFoundError:
            continue
    return found


def test_pubrate_measures_workers_sharing_a_private_nats_server() -> None:
    assert "pushup-workers-nats" in TARGET_CHOICES and "pushup-workers-nats" not in TARGET_NAMES
    before = _data_dirs()
    options = Options(
        targets=("pushup-workers-nats",),
        channels=2,
        publications=100,
        publishers=4,
        client_processes=1,
        extra={"workers": "2"},
    )
    run = pubrate.run(options, QuietProgress())
    for row in run.rows:
        assert row["acknowledged"] == row["publications"]
        assert row["sub_received"] == row["sub_expected"]
    assert _data_dirs() == before


def test_the_target_counts_the_nats_server_as_the_servers_and_stops_it() -> None:
    target = NatsWorkersTarget(workers=2)
    target.start()
    try:
        assert len(target.worker_pids()) == 2
        (nats,) = _nats_servers(target.pids())
        channel = target.create_channel()
        assert target.subscribers(channel) == 0
    finally:
        target.stop()
    assert not os.path.exists(f"/proc/{nats}")

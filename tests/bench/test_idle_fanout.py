"""Tiny runs of the `idle` and `fanout` scenarios: the bench code works end to end.

No timing is asserted: these check structure and delivery, never speed.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from pushup.bench import report
from pushup.bench.progress import QuietProgress
from pushup.bench.scenarios import fanout, idle
from pushup.bench.scenarios.common import Options

TARGETS = ("pushup", "mlp", "nchan")


@pytest.mark.parametrize("target", TARGETS)
def test_idle_counts_parked_polls_and_memory(target: str) -> None:
    options = Options(targets=(target,), subscribers=(40,), channels=2, client_processes=1)
    run = idle.run(options, QuietProgress())
    (row,) = run.rows
    assert row["target"] == target
    assert row["parked"] == 40
    assert row["rss_parked_mib"] > 0
    assert row["bytes_per_parked"] is not None


@pytest.mark.parametrize("target", TARGETS)
def test_fanout_every_subscriber_receives_every_round(target: str) -> None:
    options = Options(targets=(target,), subscribers=(30,), rounds=2, client_processes=2)
    run = fanout.run(options, QuietProgress())
    (row,) = run.rows
    assert row["rounds"] == 2
    assert row["rmp_pct"] == 100.0
    assert all(r["rmp_pct"] == 100.0 for r in row["per_round"])
    assert row["p100_ms"] is not None and row["p50_ms"] is not None
    assert row["p50_ms"] <= row["p99_ms"] <= row["p100_ms"]


def test_fanout_checks_compare_with_nchan(tmp_path: pathlib.Path) -> None:
    options = Options(targets=("pushup", "nchan"), subscribers=(20,), rounds=1)
    run = fanout.run(options, QuietProgress())
    (check,) = run.checks
    assert check.value is not None and check.value > 0
    assert check.holds in (True, False)
    json_path, md_path = report.write(run, tmp_path)
    saved = json.loads(json_path.read_text())
    assert saved["scenario"] == "fanout"
    assert [row["target"] for row in saved["rows"]] == ["pushup", "nchan"]
    text = md_path.read_text()
    assert "| pushup | 20 |" in text and "| nchan | 20 |" in text
    assert report.summary(run).startswith("fanout: fan-out to 20")

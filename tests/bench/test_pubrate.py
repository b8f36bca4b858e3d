"""Tiny runs of the `pubrate` scenario: the publish-rate bench works end to end.

No timing is asserted: these check structure, acknowledgements and delivery, never speed.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import shutil

import pytest

from pushup.bench import report
from pushup.bench.progress import QuietProgress
from pushup.bench.scenarios import pubrate
from pushup.bench.scenarios.common import Options

TARGETS = ("pushup", "mlp", "nchan")
PUBLICATIONS = 300


def _available(target: str) -> bool:
    """A target counts once its adapter exists (and, for Nchan, nginx is installed)."""
    if importlib.util.find_spec(f"pushup.bench.targets.{target}") is None:
        return False
    return target != "nchan" or shutil.which("nginx") is not None


def _skip_unless_available(*targets: str) -> None:
    missing = [target for target in targets if not _available(target)]
    if missing:
        pytest.skip(f"target(s) not available here: {', '.join(missing)}")


def _options(*targets: str) -> Options:
    return Options(
        targets=targets,
        channels=2,
        publications=PUBLICATIONS,
        publishers=4,
        client_processes=2,
    )


@pytest.mark.parametrize("target", TARGETS)
def test_pubrate_acknowledges_every_publication(target: str) -> None:
    _skip_unless_available(target)
    run = pubrate.run(_options(target), QuietProgress())
    assert run.scenario == "pubrate"
    assert run.columns == pubrate.COLUMNS
    assert [row["channels"] for row in run.rows] == [1, 2]
    # 4 subscribers: all on the one channel, or two on each of the 2 channels.
    expected_deliveries = {1: 4 * PUBLICATIONS, 2: 4 * PUBLICATIONS // 2}
    for row in run.rows:
        assert row["target"] == target
        assert row["publications"] == pubrate.RUNS * PUBLICATIONS
        assert row["acknowledged"] == row["publications"]
        assert row["warmup_acknowledged"] == PUBLICATIONS
        assert (row["non_2xx"], row["errors"], row["timed_out"]) == (0, 0, False)
        assert len(row["per_run"]) == pubrate.RUNS
        for one in row["per_run"]:
            assert one["acknowledged"] == PUBLICATIONS
            assert one["pubs_per_s"] > 0
            assert one["server_us_per_pub"] is not None
            assert isinstance(one["client_bound"], bool)
        assert row["pubs_per_s"] > 0
        assert row["client_bound"].startswith("**yes**" if row["median_run_client_bound"] else "no")
        assert 0 <= row["client_bound_runs"] <= pubrate.RUNS
        assert row["sub_expected"] == pubrate.RUNS * expected_deliveries[row["channels"]]
        assert row["sub_received"] == row["sub_expected"]
        assert row["sub_errors"] == 0


def test_pubrate_checks_compare_with_nchan(tmp_path: pathlib.Path) -> None:
    _skip_unless_available("pushup", "nchan")
    run = pubrate.run(_options("pushup", "nchan"), QuietProgress())
    assert [check.name for check in run.checks] == [
        "publish rate, 1 channel",
        "publish rate, 2 channels",
    ]
    for check in run.checks:
        assert check.value is not None and check.value > 0
        assert check.holds in (True, False)
    json_path, md_path = report.write(run, tmp_path)
    saved = json.loads(json_path.read_text())
    assert [(row["target"], row["channels"]) for row in saved["rows"]] == [
        ("pushup", 1),
        ("pushup", 2),
        ("nchan", 1),
        ("nchan", 2),
    ]
    text = md_path.read_text()
    assert "| pushup | 1 |" in text and "| nchan | 2 |" in text
    assert "client_bound" in text
    assert report.summary(run).startswith("pubrate: publish rate, 1 channel")


def test_pubrate_without_nchan_is_not_judged() -> None:
    run = pubrate.Run("pubrate", {}, pubrate.COLUMNS)
    run.rows.append(
        {
            "target": "pushup",
            "channels": 1,
            "pubs_per_s": 1000.0,
            "server_us_per_pub": 10.0,
            "client_bound_runs": 0,
            "median_run_client_bound": False,
            "acknowledged": 10,
            "publications": 10,
        }
    )
    (check,) = pubrate._checks(run)
    assert check.holds is None and check.value is None


@pytest.mark.parametrize(
    ("used", "processes", "others", "bound"),
    [
        (0.95, 2, 1.0, True),  # the server took a core: the clients had one left, and used it
        (0.50, 2, 1.0, False),  # half of what was left: the clients were waiting
        (1.90, 2, 0.0, True),  # an idle machine, both client processes busy
        (0.95, 1, 0.0, True),  # one client process is one core at most
        (0.10, 2, 2.0, True),  # nothing was left to the clients at all
    ],
)
def test_client_bound_share(used: float, processes: int, others: float, bound: bool) -> None:
    share = pubrate._share(used, processes, others, window_s=1.0, cpus=2)
    assert (share >= pubrate.CLIENT_BOUND_SHARE) is bound

"""The paper scenarios (`paper-traffic`, `paper-scale`) in tiny runs against real servers.

These check that each scenario runs end to end on every target, that its rows hold
what the Markdown table and the plots read, and that PushUp receives everything. They
assert no timing: the figures themselves belong to real runs, not to tests.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Iterator

import pytest

from pushup.bench import report
from pushup.bench.progress import QuietProgress
from pushup.bench.run import Run
from pushup.bench.scenarios import paper_scale, paper_traffic
from pushup.bench.scenarios.common import Options
from pushup.bench.targets import TARGET_NAMES, Target

PNG = b"\x89PNG\r\n\x1a\n"


def _available(name: str) -> bool:
    if name != "nchan":
        return True
    from pushup.bench.nchan import NCHAN_MODULE, NGINX

    return os.path.exists(NGINX) and os.path.exists(NCHAN_MODULE)


TARGETS = [
    pytest.param(
        name, marks=pytest.mark.skipif(not _available(name), reason=f"{name} is not installed")
    )
    for name in TARGET_NAMES
]


def _assert_pngs(paths: list[pathlib.Path], names: list[str]) -> None:
    assert [path.name for path in paths] == names
    for path in paths:
        assert path.read_bytes().startswith(PNG)


@pytest.mark.parametrize("name", TARGETS)
def test_paper_traffic_tiny_run(name: str, tmp_path: pathlib.Path) -> None:
    options = Options(
        targets=(name,),
        subscribers=(10,),
        rounds=1,
        time_scale=0.01,
        deadline_s=10.0,
        extra={"intervals": "10"},
    )
    run = paper_traffic.run(options, QuietProgress())

    expected = {"pushup": ["CP", "ELP"], "mlp": ["MLP"], "nchan": ["Nchan"]}[name]
    assert [row["method"] for row in run.rows] == expected
    for row in run.rows:
        assert "error" not in row, row
        assert set(paper_traffic.COLUMNS) <= set(row)
        assert (row["cc"], row["interval_s"]) == (10, 10.0)
        assert row["kb"] > 0 and row["polls"] >= 10  # at least one poll per client
        assert row["bytes_in"] > 0 and row["bytes_out"] > 0
        if row["method"] == "Nchan":
            assert row["paper_kb"] is None and row["paper_mpt_s"] is None
        else:  # the paper's Tables 1 and 2 at cc=10, 10 s
            assert row["paper_kb"] == {"CP": 12.7, "MLP": 1.27, "ELP": 1.27}[row["method"]]
            assert row["paper_mpt_s"] == {"CP": 0.6, "MLP": 0.1, "ELP": 0.2}[row["method"]]
        if name == "pushup":
            assert row["rmp_pct"] == 100.0
            assert row["mpt_s"] is not None and row["errors"] == 0
    assert "| method |" in report.markdown(run)
    _assert_pngs(
        paper_traffic.plot(run, tmp_path), ["paper-traffic-fig7.png", "paper-traffic-fig8.png"]
    )


@pytest.mark.parametrize("name", TARGETS)
def test_paper_scale_tiny_run(name: str, tmp_path: pathlib.Path) -> None:
    options = Options(targets=(name,), subscribers=(20,), rounds=2, deadline_s=10.0)
    run = paper_scale.run(options, QuietProgress())

    [row] = run.rows
    assert set(paper_scale.COLUMNS) <= set(row)
    assert (row["target"], row["connections"]) == (name, 20)
    assert row["smu_mib"] > 0 and 0 < row["smu_pct"] < 100
    assert row["threads"] >= 1
    assert len(row["rounds"]) == 2
    if name == "pushup":
        assert row["status"] == "ok", row["status"]
        assert (row["connected"], row["parked"], row["rmp_pct"]) == (20, 20, 100.0)
        assert row["mpt_s"] is not None and row["errors"] == 0
    assert run.checks == []  # 20 connections: outside the 500-16,000 the checks judge
    assert "| method |" in report.markdown(run)
    _assert_pngs(
        paper_scale.plot(run, tmp_path),
        ["paper-scale-fig9.png", "paper-scale-fig10.png", "paper-scale-fig11.png"],
    )


def test_paper_scale_records_a_server_that_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that cannot even start is a row saying so, and the run goes on."""

    @contextlib.contextmanager
    def broken(name: str) -> Iterator[Target]:
        raise RuntimeError("cannot start a new thread")
        yield  # pragma: no cover

    monkeypatch.setattr(paper_scale, "running", broken)
    run = paper_scale.run(Options(targets=("mlp",), subscribers=(500,)), QuietProgress())
    [row] = run.rows
    assert row["status"].startswith("error: RuntimeError('cannot start a new thread')")
    assert row["rmp_pct"] == 0.0 and row["connected"] == 0
    assert any("MLP at 500" in note for note in run.notes)


def _scale_run(
    rows: list[tuple[str, int, float | None, float]], cpu_us: float | None = None
) -> Run:
    run = Run("paper-scale", {}, paper_scale.COLUMNS)
    for target, count, mpt_s, rmp_pct in rows:
        run.rows.append(
            {
                "target": target,
                "connections": count,
                "mpt_s": mpt_s,
                "rmp_pct": rmp_pct,
                "server_us_per_repoll": cpu_us,
            }
        )
    return run


def _judged(run: Run, what: str) -> list[bool | None]:
    return [check.holds for check in paper_scale._checks(run) if what in check.name]


def test_paper_scale_checks_judge_pushup_against_nchan() -> None:
    run = _scale_run(
        [
            ("pushup", 500, 0.15, 100.0),  # 1.5x Nchan: holds
            ("nchan", 500, 0.10, 100.0),
            ("pushup", 1000, 0.16, 100.0),  # 1.6x: missed
            ("nchan", 1000, 0.10, 100.0),
            ("pushup", 2000, 0.05, 99.0),  # faster but lost a message: missed
            ("nchan", 2000, 0.10, 100.0),
            ("pushup", 4000, 0.05, 100.0),  # no Nchan: not judged
            ("pushup", 100, 1.0, 100.0),  # outside the paper's range: no check
        ]
    )
    assert _judged(run, "MPT") == [True, False, False, None]


def test_paper_scale_judges_the_cpu_of_a_repoll_against_nchan() -> None:
    run = _scale_run([("pushup", 500, 0.1, 100.0), ("nchan", 500, 0.1, 100.0)])
    run.rows[0]["server_us_per_repoll"], run.rows[1]["server_us_per_repoll"] = 30.0, 20.0
    assert _judged(run, "re-poll") == [True]  # 1.5x
    run.rows[0]["server_us_per_repoll"] = 31.0
    assert _judged(run, "re-poll") == [False]
    run.rows[1]["server_us_per_repoll"] = None  # Nchan's not measured
    assert _judged(run, "re-poll") == [None]


def test_paper_traffic_reads_the_papers_tables() -> None:
    assert paper_traffic.paper_value(paper_traffic.PAPER_KB, "CP", 1000, 50.0) == 10743.5
    assert paper_traffic.paper_value(paper_traffic.PAPER_MPT_S, "ELP", 100, 40.0) == 1.2
    assert paper_traffic.paper_value(paper_traffic.PAPER_KB, "Nchan", 1000, 10.0) is None
    assert paper_traffic.paper_value(paper_traffic.PAPER_KB, "CP", 1000, 15.0) is None
    assert paper_traffic.intervals(Options()) == (10.0, 20.0, 30.0, 40.0, 50.0)
    assert paper_traffic.intervals(Options(extra={"intervals": "10,30"})) == (10.0, 30.0)

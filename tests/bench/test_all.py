"""`pushup bench all`: the published runs declared once and in step with
docs/benchmarks.md, their plan and estimates, and tiny runs of the real scenarios."""

from __future__ import annotations

import datetime
import json
import pathlib
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from pushup.bench import suite
from pushup.bench.cli import bench, parse
from pushup.bench.progress import duration
from pushup.bench.scenarios import SCENARIOS, idle

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"


def _pushup_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pushup", "bench", *args],
        capture_output=True,
        text=True,
        timeout=110,
    )


def _doc_command_block() -> list[str]:
    """The `pushup bench` lines of the first sh block after "Commands"."""
    text = DOC.read_text()
    block = re.search(r"^Commands\b.*?^```sh\n(.*?)^```", text, flags=re.M | re.S)
    assert block, "docs/benchmarks.md has no command block"
    return [line for line in block.group(1).splitlines() if line.startswith("pushup bench ")]


def test_list_prints_the_table_in_order() -> None:
    result = _pushup_bench("all", "--list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [run.command for run in suite.RUNS]


def test_the_doc_command_block_is_the_table() -> None:
    assert _doc_command_block() == [run.command for run in suite.RUNS]


def test_every_scenario_command_in_the_doc_is_a_published_run() -> None:
    """Commands in the text (`code`) and in every sh block, not just the first."""
    text = DOC.read_text()
    spans = re.findall(r"`(pushup bench [^`]*)`", " ".join(text.split()))
    lines = re.findall(r"^(pushup bench .*)$", text, flags=re.M)
    written = {command for command in spans + lines if command.split()[2] in SCENARIOS}
    assert len(written) > len(_doc_command_block()) // 2
    assert written <= {run.command for run in suite.RUNS}


def test_every_run_parses_and_names_are_unique() -> None:
    names = [run.name for run in suite.RUNS]
    assert len(set(names)) == len(names)
    outs = {(run.out_dir(pathlib.Path("o")), run.scenario) for run in suite.RUNS}
    assert len(outs) == len(suite.RUNS), "two runs would write the same files"
    for run in suite.RUNS:
        assert "--out" not in run.args and "--quiet" not in run.args
        bench.commands[run.scenario].make_context("pushup bench", list(run.args[1:]))


def test_estimates_are_the_published_durations() -> None:
    """Each estimate is its published run's wall-clock time, where docs/bench has it."""
    checked = 0
    for run in suite.RUNS:
        path = run.out_dir(ROOT / "docs" / "bench") / f"{run.scenario}.json"
        if not path.exists():
            continue
        saved = json.loads(path.read_text())
        took = datetime.datetime.fromisoformat(saved["finished_at"]) - (
            datetime.datetime.fromisoformat(saved["started_at"])
        )
        assert run.estimate_s == pytest.approx(took.total_seconds(), rel=0.05), run.name
        checked += 1
    assert checked >= len(suite.RUNS) - 1


def test_dry_run_prints_each_run_with_its_estimate(tmp_path: pathlib.Path) -> None:
    result = _pushup_bench(
        "all", "--dry-run", "--skip", "fanout,capacity", "--out", str(tmp_path / "r")
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    skipped = {"fanout", "capacity"}
    runs = [run for run in suite.RUNS if run.name not in skipped]
    assert [line.split()[0] for line in lines[:-1]] == [run.name for run in runs]
    full = next(line for line in lines if line.startswith("paper-traffic-full-scale "))
    assert "30 min 30 s" in full and "--time-scale 1 --rounds 1" in full
    assert full.endswith(str(tmp_path / "r" / "paper-traffic-full-scale"))
    total = sum(run.estimate_s for run in runs)
    assert lines[-1] == (f"{len(runs)} runs at the published sizes: about {duration(total)} in all")
    assert not (tmp_path / "r").exists()


def test_only_rejects_an_unknown_name() -> None:
    result = CliRunner().invoke(bench, ["all", "--only", "idle,nope"])
    assert result.exit_code == 2
    assert "no run named nope" in result.output


def test_missing_programs_fail_before_anything_runs(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("redis-server", "haproxy"):
        monkeypatch.setitem(suite.PROGRAMS, name, (lambda: False, suite.PROGRAMS[name][1]))
    result = CliRunner().invoke(
        bench, ["all", "--only", "pubrate-journal,cluster", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: missing redis-server, haproxy: apt-get install redis-server haproxy "
        "(scripts/install-test-deps.sh installs every one)"
    ]
    assert not (tmp_path / "r").exists()


def test_programs_follow_scenarios_and_targets() -> None:
    by_name = {run.name: run for run in suite.RUNS}

    def needed(name: str) -> list[str]:
        return suite.programs(by_name[name].scenario, parse(by_name[name].args))

    assert needed("idle") == ["nginx with Nchan"]
    assert needed("pubrate-journal") == []
    assert needed("cluster") == ["redis-server", "haproxy"]
    assert needed("capacity") == ["redis-server", "nginx with Nchan"]


def test_scale_shrinks_sizes_and_times() -> None:
    options = suite.scaled(parse(("paper-traffic", "--time-scale", "0.1")), 0.01)
    assert options.subscribers == (1, 1, 10)
    assert options.time_scale == suite.MIN_TIME_SCALE
    assert suite.scaled(parse(("pubrate",)), 0.001).publications == 20


def test_plan_corrects_the_time_left_with_actual_durations() -> None:
    now = [0.0]
    plan = suite.Plan([100, 200, 300], clock=lambda: now[0])
    assert plan.left_s() == 600
    plan.begin()
    now[0] = 30
    assert plan.left_s() == 570
    now[0] = 200  # the first run took twice its estimate: the others will too
    assert plan.finish() == 200
    assert plan.factor() == 2
    assert plan.left_s() == 1000
    plan.begin()
    now[0] = 210
    plan.finish(counted=False)  # a crash says nothing about speed
    assert plan.factor() == 2
    assert plan.left_s() == 600
    plan.begin()
    now[0] = 900
    plan.finish()
    assert plan.left_s() == 0
    assert plan.elapsed_s() == 900


def test_only_runs_the_named_run_at_a_tiny_scale(tmp_path: pathlib.Path) -> None:
    result = _pushup_bench(
        "all", "--only", "pubrate-journal", "--scale", "0.001", "--quiet", "--out", str(tmp_path)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    saved = json.loads((tmp_path / "pubrate-journal" / "pubrate.json").read_text())
    assert saved["params"]["targets"] == ["pushup", "pushup-journal"]
    assert saved["params"]["publications"] == 20
    assert (tmp_path / "pubrate-journal" / "pubrate.md").exists()
    lines = result.stdout.splitlines()
    assert lines[0].startswith("[1/1] pubrate-journal: started")
    assert re.fullmatch(r"Summary: 1 run in \d+ s, 0 crashed", lines[-2])
    assert lines[-1].startswith("  pubrate-journal: done in ")
    assert "pubrate: publish rate, 1 channel" in lines[-1]


def test_a_crashed_run_fails_the_command_after_the_others_ran(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: object) -> None:
        raise RuntimeError("nginx did not start:\nthe log")

    monkeypatch.setattr(idle, "run", crash)
    args = ["all", "--only", "idle,pubrate-journal", "--scale", "0.001", "--quiet"]
    result = CliRunner().invoke(bench, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert (tmp_path / "pubrate-journal" / "pubrate.json").exists()
    assert not (tmp_path / "idle.json").exists()
    summary = result.output[result.output.index("Summary:") :].splitlines()
    assert summary[0].startswith("Summary: 2 runs in ") and summary[0].endswith(", 1 crashed")
    assert re.fullmatch(r"  idle: CRASHED in \d+ s: RuntimeError: nginx did not start:", summary[1])
    assert summary[2].startswith("  pubrate-journal: done in ")

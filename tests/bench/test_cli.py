"""The `pushup bench` command line itself: options reach the scenario, files are written."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys


def test_bench_command_runs_a_scenario_and_writes_its_files(tmp_path: pathlib.Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pushup",
            "bench",
            "idle",
            "--target",
            "pushup",
            "--subscribers",
            "20",
            "--client-processes",
            "1",
            "--quiet",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("idle:")
    saved = json.loads((tmp_path / "idle.json").read_text())
    assert saved["params"]["subscribers"] == [20]
    assert (tmp_path / "idle.md").read_text().startswith("### `idle`")


def test_bench_intervals_option_reaches_paper_traffic(tmp_path: pathlib.Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pushup",
            "bench",
            "paper-traffic",
            "--target",
            "pushup",
            "--subscribers",
            "2",
            "--intervals",
            "10",
            "--rounds",
            "1",
            "--time-scale",
            "0.01",
            "--client-processes",
            "1",
            "--no-plots",
            "--quiet",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "paper-traffic.json").read_text())
    assert {row["interval_s"] for row in saved["rows"]} == {10.0}


def test_bench_rejects_a_bad_subscriber_list() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pushup", "bench", "idle", "--subscribers", "ten"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "whole numbers" in result.stderr

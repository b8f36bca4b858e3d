"""Writing a run down: JSON for machines, Markdown for people, one line for the terminal."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from pushup.bench.run import Run, now

__all__ = ["markdown", "now", "summary", "write"]


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(run: Run) -> str:
    lines = [f"### `{run.scenario}`", ""]
    params = ", ".join(f"{key}={value}" for key, value in run.params.items())
    m = run.machine
    lines.append(
        f"Run {run.started_at} on {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, "
        f"Python {m['python']}, PushUp {m['pushup']}, nginx {m['nginx']}. Parameters: {params}."
    )
    lines += ["", "| " + " | ".join(run.columns) + " |"]
    lines.append("|" + "|".join("---" for _ in run.columns) + "|")
    for row in run.rows:
        lines.append("| " + " | ".join(_cell(row.get(column)) for column in run.columns) + " |")
    if run.checks:
        lines += ["", "| target | value | limit | holds | note |", "|---|---|---|---|---|"]
        for check in run.checks:
            holds = {True: "**yes**", False: "**no**", None: "not judged"}[check.holds]
            lines.append(
                f"| {check.name} | {_cell(check.value)} | {check.limit} | {holds} | {check.note} |"
            )
    if run.notes:
        lines += [""] + [f"- {note}" for note in run.notes]
    return "\n".join(lines) + "\n"


def summary(run: Run) -> str:
    """One line: the scenario and whether its targets hold."""
    if not run.checks:
        return f"{run.scenario}: {len(run.rows)} rows"
    verdicts = []
    for check in run.checks:
        verdict = {True: "holds", False: "MISSED", None: "not judged"}[check.holds]
        verdicts.append(f"{check.name} {verdict}")
    return f"{run.scenario}: " + "; ".join(verdicts)


def write(run: Run, out_dir: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Save `<scenario>.json` and `<scenario>.md` in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{run.scenario}.json"
    md_path = out_dir / f"{run.scenario}.md"
    json_path.write_text(json.dumps(run.to_dict(), indent=2) + "\n")
    md_path.write_text(markdown(run))
    return json_path, md_path

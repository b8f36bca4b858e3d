"""The tree as docs/architecture.md describes it: small modules, each in the module map,
and layers whose check (import-linter's contracts, run by `make test`) fails on an
import that crosses one."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "pushup"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
# "About 450 lines" at most, with room for a docstring grown by a few lines.
MAX_LINES = 460
# Described as a whole by their own rows and documents (docs/benchmarks.md, client.md).
MAPPED_AS_FOLDERS = ("bench/", "client/")


def _modules() -> list[str]:
    return sorted(
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py"
    )


def _mapped() -> set[str]:
    """Modules the module map names: `dir/file.py`, or a bare `file.py` after one in
    the same row, which is in that one's folder."""
    found = set()
    for row in ARCHITECTURE.read_text().splitlines():
        if not row.startswith("| `"):
            continue
        names = re.findall(r"`([^`]+\.py)`", row.split("|")[1])
        folder = ""
        for name in names:
            if "/" in name:
                folder = name.rpartition("/")[0]
                found.add(name)
            else:
                found.add(f"{folder}/{name}" if folder else name)
    return found


def test_no_module_is_much_over_450_lines() -> None:
    long = {
        module: length
        for module in _modules()
        if (length := len((PACKAGE / module).read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, "split these, one concept per module (docs/architecture.md)"


def test_every_module_is_in_the_module_map() -> None:
    unmapped = [
        module
        for module in _modules()
        if module not in _mapped() and not module.startswith(MAPPED_AS_FOLDERS)
    ]
    assert unmapped == [], "add a row to the module map of docs/architecture.md"


# One import per contract of pyproject.toml that breaks it, added to a copy of the tree.
VIOLATIONS = {
    "core/model.py": "pushup.http.errors",
    "http/router.py": "pushup.engines.memory.cache",
    "engines/memory/cache.py": "pushup.http.response",
    "observe/metrics.py": "pushup.http.server",
    "client/wire.py": "pushup.core.model",
    "bench/report.py": "pushup.engines.redis.keys",
}


def test_an_import_across_a_layer_breaks_its_contract(tmp_path: Path) -> None:
    copy = tmp_path / "src" / "pushup"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    for module, imported in VIOLATIONS.items():
        with (copy / module).open("a") as file:
            file.write(f"\nimport {imported}  # noqa\n")
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run(
        [str(lint), "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "src")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "0 kept, 5 broken" in run.stdout, run.stdout
    for module, imported in VIOLATIONS.items():
        importer = "pushup." + module.removesuffix(".py").replace("/", ".")
        assert f"{importer} -> {imported}" in run.stdout, (importer, run.stdout)

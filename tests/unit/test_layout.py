"""The tree as docs/architecture.md describes it: small modules, each in the module map.
(The layers between the folders are import-linter's, run by `make test`.)"""

from __future__ import annotations

import re
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

"""The build the tests run: the one `make test` asked for (PUSHUP_EXPECT_BUILD, checked
at the start of the session in tests/conftest.py), and compiled modules older than their
source found, since they would run old code."""

from __future__ import annotations

import importlib.machinery
import os
from pathlib import Path

from pushup import build


def test_a_compiled_module_older_than_its_source_is_found(tmp_path: Path) -> None:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    (tmp_path / "http").mkdir()
    fresh_source, fresh = tmp_path / "http" / "fresh.py", tmp_path / "http" / f"fresh{suffix}"
    old_source, old = tmp_path / "http" / "old.py", tmp_path / "http" / f"old{suffix}"
    for path in (fresh_source, fresh, old_source, old):
        path.write_text("")
    os.utime(fresh_source, (1_000, 1_000))
    os.utime(fresh, (2_000, 2_000))
    os.utime(old, (1_000, 1_000))
    os.utime(old_source, (2_000, 2_000))
    (tmp_path / f"alone{suffix}").write_text("")  # no source beside it: not ours to judge
    assert build.stale(tmp_path) == ["http/old.py"]


def test_the_kind_names_the_build_that_runs() -> None:
    assert build.kind() == ("compiled (mypyc)" if build.compiled() else "pure Python")
    assert build.stale() == []

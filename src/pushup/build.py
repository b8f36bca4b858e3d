"""Which build runs: compiled (the request paths as mypyc extensions, `make compiled`,
the default of `make serve` and `make test`) or pure Python. A compiled module shadows
its `.py`, so one built before its source last changed runs old code: `stale` finds
those, for the start-up banner and the test suite to say so instead of misleading."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

# A module every compiled build has (setup.py's list): its origin tells the build.
_PROBE = "pushup.http.protocol"


def compiled() -> bool:
    """Whether the request paths run as compiled extensions."""
    spec = importlib.util.find_spec(_PROBE)
    return spec is not None and _is_extension(spec.origin)


def kind() -> str:
    return "compiled (mypyc)" if compiled() else "pure Python"


def stale(package: Path | None = None) -> list[str]:
    """Compiled modules older than their source, as paths under the package."""
    package = package or Path(__file__).resolve().parent
    found = []
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for extension in package.rglob(f"*{suffix}"):
            source = extension.with_name(extension.name[: -len(suffix)] + ".py")
            if source.exists() and source.stat().st_mtime > extension.stat().st_mtime:
                found.append(str(source.relative_to(package)))
    return sorted(found)


def _is_extension(origin: str | None) -> bool:
    return origin is not None and origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))

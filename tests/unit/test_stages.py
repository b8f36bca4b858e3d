"""`pushup stages`: every request path runs through a real server in this process, and
its time splits into the stages the budget in docs/architecture.md names."""

from __future__ import annotations

import pytest

from pushup.stages import _STAGES, by_stage, compiled_modules, measure


def test_each_path_is_timed_and_split_by_stage() -> None:
    results = measure(300, profile=True)
    assert [path.name for path, _, _ in results] == ["publish", "repoll"]
    for _, ns, stats in results:
        assert ns > 0
        assert stats is not None
        if compiled_modules():
            continue  # cProfile sees nothing inside the compiled build's modules
        shares = by_stage(stats)
        assert sum(shares.values()) == pytest.approx(1.0)
        named = {stage for stage, _ in _STAGES}
        # Nearly all the time lands in a named stage, and the big ones are there.
        assert shares.get("other", 0.0) < 0.1, shares
        assert (
            {"parse", "route", "validate", "engine", "connection"}
            <= set(shares)
            <= named | {"other"}
        )

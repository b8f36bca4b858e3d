"""The heap trimmer: after enough closed connections, at most so often."""

from __future__ import annotations

from pushup.http.trim import HeapTrimmer


def test_trims_after_a_thousand_closed_at_most_every_ten_seconds() -> None:
    closed = [0]
    now = [100.0]
    trims: list[float] = []
    trimmer = HeapTrimmer(
        lambda: closed[0], trim=lambda: trims.append(now[0]), clock=lambda: now[0]
    )
    trimmer.check()
    closed[0] = 999
    trimmer.check()
    assert trims == []
    closed[0] = 1_000
    trimmer.check()
    assert trims == [100.0]
    closed[0] = 5_000
    now[0] = 105.0
    trimmer.check()  # too soon after the last
    now[0] = 110.0
    trimmer.check()
    assert trims == [100.0, 110.0]
    now[0] = 200.0
    trimmer.check()  # nothing closed since
    assert trimmer.trims == 2


def test_finds_glibcs_malloc_trim_here() -> None:
    trimmer = HeapTrimmer(lambda: 1_000)
    trimmer.check()
    assert trimmer.trims == 1

"""`--max-cache-bytes` across a restart of the journaled embedded engine: a smaller
limit than the journal holds drops the oldest messages as it starts."""

from __future__ import annotations

import pytest

from pushup.engines.memory import MemoryEngine
from tests.engines.conftest import MakeEngine, RecordingListener
from tests.engines.test_cache_bytes import payload
from tests.engines.test_contract import channel, ids, publish1, read, started


@pytest.fixture
def engine_kind() -> str:
    return "journal"


async def test_a_smaller_limit_trims_the_restored_cache(
    make_engine: MakeEngine, listener: RecordingListener
) -> None:
    engine = await started(make_engine, listener)
    a = await channel(engine)
    sent = [await publish1(engine, [a], payload(100)) for _ in range(10)]
    await engine.close()

    engine = await started(make_engine, listener, max_cache_bytes=500)
    assert isinstance(engine, MemoryEngine)
    assert engine._budget.bytes == 500
    result = await read(engine, [a])
    assert (ids(result), result.gap) == ([m.id for m in sent[5:]], True)
    assert (await read(engine, [a], since=sent[4].id)).gap is False


async def test_gap_marks_moved_by_the_limit_survive_a_restart(
    make_engine: MakeEngine, listener: RecordingListener
) -> None:
    engine = await started(make_engine, listener, max_cache_bytes=500)
    a, b = await channel(engine), await channel(engine)
    old = await publish1(engine, [a], payload(100))
    for _ in range(5):  # the sixth 100 bytes: a's message, the oldest, goes
        await publish1(engine, [b], payload(100))
    assert (await read(engine, [a])).gap is True
    await engine.close()

    engine = await started(make_engine, listener, max_cache_bytes=500)
    result = await read(engine, [a])
    assert (ids(result), result.gap) == ([], True)
    assert (await read(engine, [a], since=old.id)).gap is False

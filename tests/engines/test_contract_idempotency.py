"""The engine contract of idempotent publishing (`Engine.publish_once`), on every
engine: a key's first answer is given again within its window and nothing is stored
twice, on a restarted engine too where the engine keeps anything, and on another node
of a shared engine."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from pushup.core.engine import Engine, Publication
from pushup.core.errors import ChannelsNotFound, IdempotencyKeyReused
from pushup.core.idempotency import IdempotencyKey, fingerprint
from pushup.core.model import Message
from tests.engines.conftest import MakeEngine, RecordingListener, same
from tests.engines.test_contract import channel, ids, read, started
from tests.unit.fakes import FakeClock

WINDOW_S = 300.0


def key(
    name: str, publications: Sequence[Publication], *, batch: bool = True, scope: str = ""
) -> IdempotencyKey:
    return IdempotencyKey(scope, name, fingerprint(publications, batch=batch), WINDOW_S)


async def once(
    engine: Engine, publications: Sequence[Publication], name: str = "k1", **kw: str
) -> tuple[list[Message], bool]:
    return await engine.publish_once(publications, key(name, publications, **kw))


async def test_a_retry_gets_the_first_answer_and_nothing_is_stored_twice(
    engine: Engine, listener: RecordingListener
) -> None:
    a, b = await channel(engine, "a"), await channel(engine)
    batch: list[Publication] = [(["a"], b'"x"'), ([b, a], b'"y"')]
    first, replayed = await once(engine, batch)
    assert not replayed
    assert [m.channels for m in first] == [(a,), (a, b)]
    told = len(listener.published_calls)
    again, replayed = await once(engine, batch)
    assert replayed
    assert [same(m) for m in again] == [same(m) for m in first]
    assert ids(await read(engine, [a, b])) == [m.id for m in first]
    assert len(listener.published_calls) == told  # nothing delivered twice


async def test_the_same_key_with_other_publications_is_refused(engine: Engine) -> None:
    a = await channel(engine, "a")
    await once(engine, [([a], b"1")])
    for other in ([([a], b"2")], [([a], b"1"), ([a], b"1")]):
        with pytest.raises(IdempotencyKeyReused):
            await engine.publish_once(other, key("k1", other))
    # The same publication through /publish rather than /publish/batch: another request.
    single = [([a], b"1")]
    with pytest.raises(IdempotencyKeyReused):
        await engine.publish_once(single, key("k1", single, batch=False))
    assert len((await read(engine, [a])).hits) == 1


async def test_keys_are_apart_by_name_and_by_scope(engine: Engine) -> None:
    a = await channel(engine, "a")
    publication: list[Publication] = [([a], b"1")]
    results = [
        await once(engine, publication, "k1"),
        await once(engine, publication, "k2"),
        await once(engine, publication, "k1", scope="other publisher"),
    ]
    assert [replayed for _, replayed in results] == [False] * 3
    assert len({messages[0].id for messages, _ in results}) == 3


async def test_an_error_is_not_kept_and_a_retry_runs_afresh(engine: Engine) -> None:
    publication: list[Publication] = [(["later"], b"1")]
    with pytest.raises(ChannelsNotFound):
        await once(engine, publication)
    made = await channel(engine, "later")
    messages, replayed = await once(engine, publication)
    assert not replayed and messages[0].channels == (made,)


async def test_the_answer_outlives_its_channel_but_not_its_window(
    engine: Engine, clock: FakeClock
) -> None:
    a = await channel(engine, "a", ttl=10_000)
    publication: list[Publication] = [(["a"], b"1")]
    first, _ = await once(engine, publication)
    await engine.close_channel(a)
    again, replayed = await once(engine, publication)
    assert replayed and again[0].id == first[0].id
    await channel(engine, "a", ttl=10_000)
    clock.advance(WINDOW_S + 1)
    later, replayed = await once(engine, publication)
    assert not replayed and later[0].id > first[0].id


async def test_the_answer_survives_a_restart(
    engine_kind: str, make_engine: MakeEngine, listener: RecordingListener, clock: FakeClock
) -> None:
    if engine_kind == "memory":
        pytest.skip("without a journal the embedded engine keeps nothing across a restart")
    first_engine = await started(make_engine, listener)
    a = await channel(first_engine, "a")
    publication: list[Publication] = [([a], b"1")]
    first, _ = await once(first_engine, publication)
    await first_engine.close()
    clock.advance(1.0)
    second_engine = await started(make_engine, listener)
    again, replayed = await once(second_engine, publication)
    assert replayed and [same(m) for m in again] == [same(m) for m in first]
    assert ids(await read(second_engine, [a])) == [first[0].id]
    with pytest.raises(IdempotencyKeyReused):
        await once(second_engine, [([a], b"2")])


async def test_calls_at_once_store_a_key_once_on_every_node(
    engine_kind: str, make_engine: MakeEngine
) -> None:
    """Without the hub, which makes a retry in one process wait for the call in flight."""
    count = 1 if engine_kind in ("memory", "journal") else 2
    nodes = [await started(make_engine, RecordingListener()) for _ in range(count)]
    a = await channel(nodes[0], "a")
    publication: list[Publication] = [(["a"], b"1")]
    answers = await asyncio.gather(*(once(node, publication) for node in nodes * 6))
    assert sorted(replayed for _, replayed in answers) == [False] + [True] * (6 * count - 1)
    assert len({messages[0].id for messages, _ in answers}) == 1
    assert len((await read(nodes[-1], [a])).hits) == 1


async def test_a_retry_whose_first_call_was_cancelled_waits_for_its_commit(
    engine: Engine,
) -> None:
    """The first caller left (its client hung up) while its publication was being
    stored: the retry finds it stored, not free."""
    a = await channel(engine, "a")
    publication: list[Publication] = [(["a"], b"1")]
    first = asyncio.ensure_future(once(engine, publication))
    await asyncio.sleep(0)  # under way: with a journal, in a group being committed
    first.cancel()
    retried, _ = await once(engine, publication)
    (stored,) = (await read(engine, [a])).hits
    assert stored[0].id == retried[0].id


async def test_a_batch_stored_in_several_parts_is_answered_whole(engine: Engine) -> None:
    """NATS stores a batch of more than a thousand copies in several atomic batches."""
    channels = [await channel(engine) for _ in range(100)]
    batch: list[Publication] = [(channels, str(n).encode()) for n in range(25)]
    first, replayed = await once(engine, batch)
    assert not replayed and len(first) == 25
    again, replayed = await once(engine, batch)
    assert replayed and [m.id for m in again] == [m.id for m in first]
    assert len((await read(engine, channels[:1])).hits) == 25

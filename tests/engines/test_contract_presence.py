"""The engine contract of presence and of the channel ends told for the application's
channel events (`EngineListener.ended`): presence merged over the nodes of a shared
engine, and each close or expiry told once, by the node whose operation removed it."""

from __future__ import annotations

import asyncio

from pushup.core.engine import Clustered, Engine
from pushup.core.model import ChannelEnd, ChannelId
from pushup.core.presence import Presence
from tests.engines.conftest import MakeEngine, RecordingListener
from tests.engines.test_contract import alive, channel, started
from tests.unit.fakes import FakeClock

# -- presence, on the engines several nodes share ------------------------------------------


async def test_presence_is_merged_over_the_nodes_that_answer(
    make_engine: MakeEngine, engine_kind: str
) -> None:
    """Each node tells its own presence; the asker adds up the connections and takes the
    union of the subs, so one subscriber on two nodes counts once."""
    first, second = RecordingListener(), RecordingListener()
    a = await started(make_engine, first)
    if not isinstance(a, Clustered):
        assert engine_kind in ("memory", "journal")
        return  # one node: the hub's own subscriptions are the whole presence
    b = await started(make_engine, second)
    room = await channel(a, "room")
    first.present[room] = Presence(2, 0, 1, ("alice",), 1)
    second.present[room] = Presence(1, 2, 0, ("alice", "bob"), 2)
    found = await until_counted(b, room, nodes=2)
    assert (found.polls, found.streams, found.anonymous) == (3, 2, 1)
    assert (found.subs, found.sub_count, found.complete) == (("alice", "bob"), 2, True)
    # A node that could not list all of its subs makes the union incomplete, and the
    # count at least its own.
    first.present[room] = Presence(0, 1, 0, ("carol",), 5000, complete=False)
    found = await a.presence(room)
    assert (found.subs, found.sub_count, found.complete) == (("alice", "bob", "carol"), 5000, False)
    await b.close()  # it leaves at once: its last beat (NATS) is heard a moment later
    async with asyncio.timeout(10):
        while (alone := await a.presence(room)).live_nodes != 1:
            await asyncio.sleep(0.02)
    assert (alone.connections, alone.counted_nodes) == (1, 1)


async def until_counted(engine: Clustered, channel_id: ChannelId, *, nodes: int) -> Presence:
    """The presence once `nodes` nodes know of each other (a newcomer's heartbeat)."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        found = await engine.presence(channel_id)
        if found.counted_nodes == nodes or asyncio.get_running_loop().time() > deadline:
            assert found.counted_nodes == nodes, found
            return found
        await asyncio.sleep(0.05)


# -- closes and expiries told once, for the application's channel events -------------------


async def test_a_close_and_an_expiry_are_told_once_with_name_and_reason(
    engine: Engine, clock: FakeClock, listener: RecordingListener
) -> None:
    named = await channel(engine, "named")
    short = await channel(engine, ttl=10)
    await engine.close_channel("named")
    assert listener.ended_calls == [[ChannelEnd(named, "named", "closed", clock())]]
    clock.advance(11)
    assert not await alive(engine, short)
    assert listener.ended_calls[1:] == [[ChannelEnd(short, None, "expired", clock())]]


async def test_an_expiry_found_by_several_nodes_is_told_by_one(
    make_engine: MakeEngine, clock: FakeClock, engine_kind: str
) -> None:
    """Every node sweeps, and every call expires what is due first: the node whose
    operation removed a channel tells of it, and no other."""
    if engine_kind in ("memory", "journal"):
        return  # one node
    listeners = [RecordingListener() for _ in range(3)]
    nodes = [await started(make_engine, listener) for listener in listeners]
    doomed = [await channel(nodes[0], f"doomed-{n}", ttl=10) for n in range(6)]
    kept = await channel(nodes[0], "kept", ttl=1000)
    for node in nodes:  # every node knows every channel before they are due
        assert await node.resolve(doomed) == doomed
    clock.advance(11)
    # Each node at once, as a poll on each would, while their sweeps run too.
    await asyncio.gather(*(node.resolve([kept]) for node in nodes))
    async with asyncio.timeout(10):
        for listener in listeners:
            while sorted(c for call in listener.closed_calls for c in call) != doomed:
                await asyncio.sleep(0.02)
    told = [end for listener in listeners for call in listener.ended_calls for end in call]
    assert sorted(end.id for end in told) == doomed
    assert {(end.reason, end.name) for end in told} == {
        ("expired", f"doomed-{n}") for n in range(6)
    }

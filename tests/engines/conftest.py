"""The engines under contract: every test here runs once per engine, against a fake
clock; the Redis engine runs on the session's real Redis, flushed for each test, the
NATS engine on the session's real nats-server, with a stream of its own per test, and the
journaled memory engine on a data directory of its own per test (engines made one
after another in a test share it, as a restarted server would)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from pushup.core.engine import Engine
from pushup.core.model import ChannelId, Hit, Message, ReadResult
from pushup.core.presence import EMPTY, Presence
from pushup.engines.memory import Journal, MemoryEngine
from pushup.engines.nats import NatsEngine
from pushup.engines.redis import RedisEngine
from tests.unit import fakes
from tests.unit.fakes import T0, FakeClock

MakeEngine = Callable[..., Engine]
# A message by value: engines that store elsewhere hand out equal copies, not the same
# object.
Same = tuple[int, float, tuple[ChannelId, ...], bytes]


class RecordingListener(fakes.RecordingListener):
    """Also counts resyncs, which only an engine with a shared store asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.resyncs = 0
        # Who is on each channel on this listener's node, as a test sets it.
        self.present: dict[ChannelId, Presence] = {}

    async def resync(self) -> None:
        self.resyncs += 1

    def subscribers(self, channel_id: ChannelId) -> int:
        return self.presence(channel_id).connections

    def presence(self, channel_id: ChannelId) -> Presence:
        return self.present.get(channel_id, EMPTY)


def same(message: Message) -> Same:
    return (message.id, message.time, message.channels, message.data)


def hits(result: ReadResult) -> list[tuple[Same, tuple[ChannelId, ...]]]:
    return [(same(message), channels) for message, channels in result.hits]


def hit_ids(found: list[Hit]) -> list[int]:
    return [message.id for message, _ in found]


def published(listener: RecordingListener) -> list[tuple[list[Same], frozenset[ChannelId]]]:
    return [
        ([same(m) for m in messages], evicted) for messages, evicted in listener.published_calls
    ]


@pytest.fixture(params=["memory", "journal", "redis", "nats"])
def engine_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine_url(engine_kind: str, request: pytest.FixtureRequest) -> str:
    if engine_kind in ("memory", "journal"):
        return "memory://"
    return str(request.getfixturevalue(f"{engine_kind}_url"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def listener() -> RecordingListener:
    return RecordingListener()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def make_engine(
    engine_kind: str, engine_url: str, clock: FakeClock, data_dir: Path
) -> AsyncIterator[MakeEngine]:
    """Engines of the kind under test on the fake clock; all closed after the test."""
    made: list[Engine] = []

    def make(
        *,
        message_ttl_s: float = 300.0,
        max_messages: int = 100,
        channel_ttl_s: float = 3600.0,
        max_cache_bytes: int = 256 * 1024 * 1024,
        **options: Any,
    ) -> Engine:
        engine: Engine
        if engine_url == "memory://":
            journal = None
            if engine_kind == "journal":
                journal = Journal(data_dir, message_ttl_s=message_ttl_s, clock=clock, **options)
            engine = MemoryEngine(
                message_ttl_s=message_ttl_s,
                max_messages=max_messages,
                channel_ttl_s=channel_ttl_s,
                clock=clock,
                journal=journal,
                max_cache_bytes=max_cache_bytes,
            )
        elif engine_kind == "nats":
            engine = NatsEngine(
                engine_url,
                message_ttl_s=message_ttl_s,
                max_messages=max_messages,
                channel_ttl_s=channel_ttl_s,
                max_cache_bytes=max_cache_bytes,
                clock=clock,
                **options,
            )
        else:
            engine = RedisEngine(
                engine_url,
                message_ttl_s=message_ttl_s,
                max_messages=max_messages,
                channel_ttl_s=channel_ttl_s,
                max_cache_bytes=max_cache_bytes,
                clock=clock,
                **options,
            )
        made.append(engine)
        return engine

    yield make
    for engine in made:
        await engine.close()


@pytest.fixture
async def engine(make_engine: MakeEngine, listener: RecordingListener) -> Engine:
    engine = make_engine()
    await engine.start(listener)
    return engine

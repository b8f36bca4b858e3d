"""What a NATS node hears: only the publications of the channels it serves, served from
a read on until no poll has used them for the grace period; a channel served again
brings back what was published meanwhile, and a publication to several channels is one
message, read once, on a node that serves some of them."""

from __future__ import annotations

from pushup.core.model import ChannelId
from pushup.engines.nats import NatsEngine
from tests.engines.conftest import RecordingListener
from tests.helpers import until


def engine(url: str, **options: float) -> NatsEngine:
    return NatsEngine(url, message_ttl_s=300.0, max_messages=100, channel_ttl_s=3600.0, **options)


def served(node: NatsEngine) -> int:
    return int(str(node.health().details["served_channels"]))


def received(node: NatsEngine) -> int:
    return int(str(node.health().details["received_publications"]))


async def test_a_node_hears_only_the_channels_it_serves_and_lets_them_go(nats_url: str) -> None:
    publisher, reader = engine(nats_url), engine(nats_url, interest_grace_s=0.3)
    await publisher.start(RecordingListener())
    heard = RecordingListener()
    await reader.start(heard)
    try:
        a = (await publisher.create_channel(None, "a")).id
        b = (await publisher.create_channel(None, "b")).id
        ids: list[ChannelId] = await reader.resolve(["a", "b"])
        assert ids == [a, b]
        await reader.read([a], None, None, None)
        assert served(reader) == 1
        both = (await publisher.publish([([a, b], b'"both"')]))[0]
        (only_b,) = await publisher.publish([([b], b'"b"')])
        await until(lambda: _is(received(reader) == 1), what="the copy on a")
        assert [m.id for call in heard.published_calls for m in call[0]] == [both.id]
        # b was never served here: its publications never came.
        result = await reader.read([a, b], None, None, None)
        assert [(m.id, chans) for m, chans in result.hits] == [
            (both.id, (a, b) if a < b else (b, a)),
            (only_b.id, (b,)),
        ]
        assert served(reader) == 2
        await until(lambda: _is(served(reader) == 0), what="the grace period to pass")
        (later,) = await publisher.publish([([a], b'"later"')])
        before = received(reader)
        result = await reader.read([a], both.id, None, None)
        assert [m.id for m, _ in result.hits] == [later.id]
        assert received(reader) == before + 2  # a's history: both, and later
    finally:
        await publisher.close()
        await reader.close()


async def _is(value: bool) -> bool:
    return value

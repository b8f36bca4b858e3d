"""Which channels a publisher key may touch, checked without a server: names by their
prefixes, unnamed channels by their owner, and ids asked of the engine once."""

from __future__ import annotations

import pytest

from pushup.core.errors import NotAllowed
from pushup.core.hub import Hub
from pushup.core.model import ChannelInfo
from pushup.core.tenants import (
    ChannelAccess,
    PublisherKey,
    PublisherKeys,
    allowed,
    listing_prefixes,
    single_key,
)
from pushup.engines.memory import MemoryEngine

BLOG = PublisherKey("blog", "b" * 32, ("blog:", "comments:"))
SHOP = PublisherKey("shop", "s" * 32, ("shop:",))
OPS = PublisherKey("ops", "o" * 32, ("",), admin=True)


def info(name: str | None, owner: str | None) -> ChannelInfo:
    return ChannelInfo(1, name, 0.0, 60.0, 0, None, owner=owner)  # type: ignore[arg-type]


def test_names_are_allowed_by_prefix_and_unnamed_channels_by_owner() -> None:
    assert allowed(BLOG, info("blog:post:1", "shop"))  # a name's prefix decides
    assert allowed(BLOG, info("comments:9", None))
    assert not allowed(BLOG, info("shop:cart", "blog"))
    assert not allowed(BLOG, info("blogs", "blog"))
    assert allowed(BLOG, info(None, "blog"))
    assert not allowed(BLOG, info(None, "shop"))
    assert not allowed(BLOG, info(None, None))
    for channel in (info("shop:cart", "shop"), info(None, "shop"), info(None, None)):
        assert allowed(OPS, channel)
        assert allowed(None, channel)  # no keys: publishing is loopback's
    assert single_key("k").unrestricted


def test_a_key_is_found_by_its_secret_alone() -> None:
    keys = PublisherKeys((BLOG, SHOP, OPS))
    assert keys.match(b"s" * 32) is SHOP
    assert keys.match(b"s" * 31) is None
    assert keys.match(b"") is None


def test_a_listing_scans_only_the_prefixes_of_its_key() -> None:
    assert listing_prefixes(None, "x") is None
    assert listing_prefixes(OPS, "x") is None
    assert listing_prefixes(BLOG, "") == ("blog:", "comments:")
    assert listing_prefixes(BLOG, "blog:post") == ("blog:post",)
    assert listing_prefixes(BLOG, "b") == ("blog:",)
    assert listing_prefixes(BLOG, "shop:") == ()


async def test_a_check_names_every_refused_channel_and_asks_for_each_id_once() -> None:
    engine = MemoryEngine(message_ttl_s=300, max_messages=10, channel_ttl_s=60)
    hub = Hub(engine)
    asked: list[object] = []

    async def channel_info(ref: int | str) -> ChannelInfo:
        asked.append(ref)
        return await hub.channel_info(ref)

    access = ChannelAccess(channel_info)
    mine = await hub.create_channel(None, None, owner="blog")
    theirs = await hub.create_channel(None, None, owner="shop")
    await access.check(BLOG, [mine.id, "blog:a", mine.id])
    with pytest.raises(NotAllowed) as caught:
        await access.check(BLOG, ["blog:a", theirs.id, "shop:x", 999])
    assert caught.value.refs == [theirs.id, "shop:x"]  # 999: unknown, for the action to say
    await access.check(BLOG, [mine.id])
    assert asked == [mine.id, theirs.id, 999]
    await access.check(OPS, [theirs.id, "shop:x"])
    await access.check(None, [theirs.id, "shop:x"])

"""Channel operations made of several engine calls: get-or-create (create, else renew),
and a page of the channel listing as a publisher key sees it; and the names reserved
for the server's own channels (`$events`, `core/events.py`), which no listing shows.

A key kept to prefixes (`core/tenants.py`) lists only the channels it may touch. By
name, that is the names under its prefixes, asked of the engine prefix by prefix (the
names under two prefixes, neither inside the other, never interleave, so one after the
other they stay in name order). By id, the engine's pages are read and filtered: the
key's unnamed channels are known only by their owner, which no engine indexes. So that
a page costs a bounded number of engine calls, a page by id for such a key may hold
fewer than `limit` channels, even none, and still have a `next`.
"""

from __future__ import annotations

from pushup.core.engine import Engine
from pushup.core.errors import ChannelsNotFound, NameTaken
from pushup.core.model import ChannelInfo, ChannelPage, ChannelRef, Retention
from pushup.core.tenants import PublisherKey, allowed, listing_prefixes

# Names starting with this are the server's own: no one else creates them.
RESERVED_PREFIX = "$"
# Rounds of create-then-renew before giving up (each lost round is a close or an expiry
# of that very name in between: more than a couple means something odd).
_GET_OR_CREATE_TRIES = 5
# A listing by id for a key kept to prefixes: channels asked of the engine per call (at
# least), and calls per page (at most).
_SCAN_BATCH = 50
_SCAN_ROUNDS = 10


def reserved(ref: ChannelRef | None) -> bool:
    """Whether a channel name is one of the server's own."""
    return isinstance(ref, str) and ref.startswith(RESERVED_PREFIX)


async def get_or_create(
    engine: Engine, ttl_s: float | None, name: str, retention: Retention, owner: str | None
) -> tuple[ChannelInfo, bool]:
    """The live channel of that name, renewed, or a new one; and whether it is new. A
    channel that closes or expires between the two steps is created anew, as if it had
    been gone before."""
    for _ in range(_GET_OR_CREATE_TRIES):
        try:
            return await engine.create_channel(ttl_s, name, retention, owner=owner), True
        except NameTaken:
            pass
        try:
            return await engine.renew_channel(name, ttl_s), False
        except ChannelsNotFound:
            continue
    raise NameTaken(name)


async def visible_page(
    engine: Engine,
    key: PublisherKey | None,
    prefix: str | None,
    after: ChannelRef | None,
    limit: int,
) -> ChannelPage:
    """A page of `Engine.list_channels` holding only the channels `key` may touch (None:
    no key is configured, every channel), never the server's own, whatever the key."""
    if reserved(prefix):
        return ChannelPage([], None)
    page = await _page_for(engine, key, prefix, after, limit)
    if any(reserved(info.name) for info in page.channels):
        # Its cursor stays the engine's: the next page starts past it all the same.
        page = ChannelPage([info for info in page.channels if not reserved(info.name)], page.next)
    return page


async def _page_for(
    engine: Engine,
    key: PublisherKey | None,
    prefix: str | None,
    after: ChannelRef | None,
    limit: int,
) -> ChannelPage:
    if key is None or key.unrestricted:
        return await engine.list_channels(prefix, after, limit)
    if prefix is None:
        return await _page_by_id(engine, key, after, limit)
    scans = listing_prefixes(key, prefix)
    if scans is None:
        return await engine.list_channels(prefix, after, limit)
    return await _page_by_names(engine, scans, after, limit)


async def _page_by_id(
    engine: Engine, key: PublisherKey, after: ChannelRef | None, limit: int
) -> ChannelPage:
    kept: list[ChannelInfo] = []
    cursor = after
    for _ in range(_SCAN_ROUNDS):
        page = await engine.list_channels(None, cursor, max(limit, _SCAN_BATCH))
        kept.extend(info for info in page.channels if allowed(key, info))
        cursor = page.next
        if cursor is None or len(kept) >= limit:
            break
    if len(kept) > limit:
        # The cursor after the last one kept: the rest are looked at again next page.
        return ChannelPage(kept[:limit], kept[limit - 1].id)
    return ChannelPage(kept, cursor)


async def _page_by_names(
    engine: Engine, scans: tuple[str, ...], after: ChannelRef | None, limit: int
) -> ChannelPage:
    # A prefix inside another adds nothing; the rest, in order, list names in order.
    outer = sorted({p for p in scans if not any(p != q and p.startswith(q) for q in scans)})
    if isinstance(after, str):
        # Prefixes whose names all sort at or before the cursor have nothing left.
        outer = [p for p in outer if p > after or after.startswith(p)]
    kept: list[ChannelInfo] = []
    for n, scan in enumerate(outer):
        page = await engine.list_channels(scan, after, limit - len(kept))
        kept.extend(page.channels)
        if len(kept) >= limit:
            more = page.next is not None or n + 1 < len(outer)
            return ChannelPage(kept, kept[-1].name if more else None)
    return ChannelPage(kept, None)

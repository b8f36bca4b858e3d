"""Tenants: publisher keys, the channels each may touch, and the check of a request's
channels against its key.

A key is allowed the channels whose names start with one of its prefixes, and the
unnamed channels it created (their owner). The prefix `""` is every name: such a key,
as `--publisher-key` alone is, may touch every channel, unnamed ones of any owner too.
A channel's name and owner never change while its id lives, and ids are never reused,
so what an id's check learned is kept (bounded) and asked of the engine only once.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from pushup.core.errors import ChannelsNotFound, NotAllowed
from pushup.core.model import ChannelId, ChannelInfo, ChannelRef

# The prefix every name carries.
EVERY_NAME = ""
# The name `--publisher-key` goes by in metrics and as the owner of what it creates: a
# file with a key of this name takes over its unnamed channels.
SINGLE_KEY_NAME = "default"
# Ids whose name and owner are remembered; past it the memory starts again.
_MAX_KNOWN = 65_536


@dataclass(frozen=True, slots=True)
class PublisherKey:
    """One publisher key: its name (metrics, logs, channel owner), its secret (never
    shown), the channel-name prefixes it may use, and whether it may read `/metrics`
    and `/dashboard`."""

    name: str
    secret: str = field(repr=False)
    prefixes: tuple[str, ...]
    admin: bool = False

    @property
    def unrestricted(self) -> bool:
        """Allowed every channel, whoever made it: nothing to check."""
        return EVERY_NAME in self.prefixes

    def allows_name(self, name: str) -> bool:
        """Whether a channel of this name is this key's to create or use."""
        return name.startswith(self.prefixes)

    def allows(self, name: str | None, owner: str | None) -> bool:
        """Whether this key may touch a channel of this name (None: unnamed) and owner."""
        if name is None:
            return self.unrestricted or owner == self.name
        return self.allows_name(name)


def single_key(secret: str) -> PublisherKey:
    """`--publisher-key`: one key, allowed every channel, `/metrics` and `/dashboard`."""
    return PublisherKey(SINGLE_KEY_NAME, secret, (EVERY_NAME,), admin=True)


@dataclass(frozen=True, slots=True)
class PublisherKeys:
    """The keys a server accepts, and where they came from (shown by the banner)."""

    keys: tuple[PublisherKey, ...]
    source: str = ""

    def match(self, given: bytes) -> PublisherKey | None:
        """The key whose secret is `given`: every secret is compared, in constant time,
        so neither the time taken nor its variation tells which key came close."""
        found = None
        for key in self.keys:
            if hmac.compare_digest(given, key.secret.encode()):
                found = key
        return found

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(key.name for key in self.keys)


def allowed(key: PublisherKey | None, channel: ChannelInfo) -> bool:
    """Whether a request made with `key` (None: no key is configured) may see or touch
    `channel`: what a listing of channels keeps of what it found."""
    return key is None or key.allows(channel.name, channel.owner)


def listing_prefixes(key: PublisherKey | None, prefix: str) -> tuple[str, ...] | None:
    """The name prefixes a listing for `key` narrowed to `prefix` need scan, or None
    when every name is this key's (scan `prefix` alone). Empty: no name of the key's
    starts with `prefix`, though unnamed channels it owns may still be listed."""
    if key is None or key.unrestricted:
        return None
    scans = []
    for own in key.prefixes:
        if prefix.startswith(own):
            return (prefix,)
        if own.startswith(prefix):
            scans.append(own)
    return tuple(scans)


class ChannelAccess:
    """Checks the channels of a request against its publisher key."""

    def __init__(self, channel_info: Callable[[ChannelRef], Awaitable[ChannelInfo]]) -> None:
        self._channel_info = channel_info
        # Channel id -> (name, owner): fixed for the id's whole life.
        self._known: dict[ChannelId, tuple[str | None, str | None]] = {}

    async def check(self, key: PublisherKey | None, refs: Iterable[ChannelRef]) -> None:
        """Raise NotAllowed naming every channel of `refs` that `key` may not touch.
        An unknown id passes: the action itself answers that it does not exist."""
        if key is None or key.unrestricted:
            return
        refused: list[ChannelRef] = []
        for ref in dict.fromkeys(refs):
            if isinstance(ref, str):
                if not key.allows_name(ref):
                    refused.append(ref)
                continue
            facts = self._known.get(ChannelId(ref))
            if facts is None:
                try:
                    info = await self._channel_info(ref)
                except ChannelsNotFound:
                    continue
                facts = self.remember(info)
            if not key.allows(*facts):
                refused.append(ref)
        if refused:
            raise NotAllowed(key.name, refused)

    def remember(self, info: ChannelInfo) -> tuple[str | None, str | None]:
        """Keep what a channel's check needs (its name and owner), learned elsewhere."""
        known = self._known
        if len(known) >= _MAX_KNOWN:
            known.clear()
        facts = known[info.id] = (info.name, info.owner)
        return facts

"""Channels this node knows to be live, and the newest message it heard on each, so a
re-poll with nothing new to answer costs no round trip to Redis.

A re-poll after a fan-out asks "anything on these channels after my cursor?". Events
reach a node gapless and in order, and ids grow with them, so every message at or below
the node's events high water has been heard; if none of those was on the poll's
channels after its cursor, the answer is "nothing yet": the hub parks the poll at the
high water and the next event wakes it. That holds only while the node can vouch for
each channel: learned from a `resolve` that Redis ran after the event connection was
up, forgotten on its close or expiry event, forgotten all at once when the event
stream is lost or skipped a number. When in doubt the engine asks Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pushup.core.model import ChannelId, ChannelRef, Message

# A channel's expiry as learned is a lower bound (publications and renewals push it
# back); stop vouching for it this long before, so a node whose clock lags Redis's a
# little asks Redis, whose answer (404) an expired channel deserves.
EXPIRY_MARGIN_S = 1.0
# Closed channel ids remembered, to refuse a `resolve` answer that a close overtook.
_CLOSES_KEPT = 4096


class KnownChannels:
    """Refs to ids, and per channel its expiry and the newest message id heard on it."""

    __slots__ = (
        "_by_ref",
        "_clock",
        "_closes",
        "_closes_forgotten_through",
        "_expires",
        "_last",
        "_refs",
        "generation",
    )

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._by_ref: dict[ChannelRef, ChannelId] = {}
        self._refs: dict[ChannelId, list[ChannelRef]] = {}
        self._expires: dict[ChannelId, float] = {}
        # The newest message id heard on the channel (or an id above it).
        self._last: dict[ChannelId, int] = {}
        # Channel ids whose close this node heard, with the event's number: ids are
        # never reused, so a `resolve` calling one live ran before its close.
        self._closes: dict[ChannelId, int] = {}
        self._closes_forgotten_through = 0
        # Bumped whenever the event stream is lost or resumes: a `resolve` that began
        # under another generation teaches nothing.
        self.generation = 0

    def __len__(self) -> int:
        return len(self._last)

    # -- answers without Redis --------------------------------------------------------

    def lookup(self, refs: Sequence[ChannelRef]) -> list[ChannelId] | None:
        """The ids of `refs` if every one is known live, else None (ask Redis)."""
        by_ref = self._by_ref
        ids = []
        for ref in refs:
            channel_id = by_ref.get(ref)
            if channel_id is None:
                return None
            ids.append(channel_id)
        return ids if self._fresh(ids) else None

    def quiet_since(self, channel_ids: Sequence[ChannelId], since: int) -> bool:
        """Whether every channel is known live and nothing heard on it is after `since`."""
        last = self._last
        for channel_id in channel_ids:
            newest = last.get(channel_id)
            if newest is None or newest > since:
                return False
        return self._fresh(channel_ids)

    def _fresh(self, channel_ids: Sequence[ChannelId]) -> bool:
        horizon = self._clock() + EXPIRY_MARGIN_S
        expires = self._expires
        return all(expires[channel_id] > horizon for channel_id in channel_ids)

    # -- learning from Redis ----------------------------------------------------------

    def learn(
        self,
        refs: Sequence[ChannelRef],
        channels: Sequence[tuple[ChannelId, int, float]],
        *,
        as_of_event: int,
        heard_event: int,
        high_water: int,
    ) -> None:
        """What a `resolve` found live: per ref its id, newest message and expiry, as
        of event `as_of_event`. The caller checked the generation is unchanged.

        Events after `as_of_event` not yet heard will update the entries as they come;
        those already heard (`heard_event` is past it) are covered by taking the high
        water as the newest message: an upper bound, so a re-poll below it asks Redis.
        """
        if self._closes_forgotten_through > as_of_event:
            return  # a close too old to remember may have been one of these
        caught_up = high_water if heard_event > as_of_event else 0
        for ref, (channel_id, newest, expires_at) in zip(refs, channels, strict=True):
            if channel_id in self._closes:
                continue  # its close was heard: Redis answered before it
            self._bind(ref, channel_id)
            self._last[channel_id] = max(self._last.get(channel_id, 0), newest, caught_up)
            self._expires[channel_id] = expires_at

    def renewed(self, channel_id: ChannelId, expires_at: float) -> None:
        """This node renewed the channel (a shorter TTL brings its expiry forward)."""
        if channel_id in self._expires:
            self._expires[channel_id] = expires_at

    # -- what events say --------------------------------------------------------------

    def heard_published(self, messages: Sequence[Message]) -> None:
        last = self._last
        for message in messages:
            for channel_id in message.channels:
                if channel_id in last:
                    last[channel_id] = message.id

    def heard_closed(self, channel_ids: Sequence[ChannelId], event: int) -> None:
        closes = self._closes
        for channel_id in channel_ids:
            closes[channel_id] = event
            self._forget(channel_id)
        while len(closes) > _CLOSES_KEPT:
            oldest = next(iter(closes))
            self._closes_forgotten_through = closes.pop(oldest)

    def clear(self) -> None:
        """The event stream was lost or resumes: vouch for nothing learned before."""
        self.generation += 1
        self._by_ref.clear()
        self._refs.clear()
        self._expires.clear()
        self._last.clear()
        self._closes.clear()
        self._closes_forgotten_through = 0

    # -- internals --------------------------------------------------------------------

    def _bind(self, ref: ChannelRef, channel_id: ChannelId) -> None:
        previous = self._by_ref.get(ref)
        if previous == channel_id:
            return
        if previous is not None:
            # A name now denotes a new channel (the old one closed): unhook it.
            self._refs[previous].remove(ref)
        self._by_ref[ref] = channel_id
        self._refs.setdefault(channel_id, []).append(ref)

    def _forget(self, channel_id: ChannelId) -> None:
        for ref in self._refs.pop(channel_id, ()):
            del self._by_ref[ref]
        self._expires.pop(channel_id, None)
        self._last.pop(channel_id, None)

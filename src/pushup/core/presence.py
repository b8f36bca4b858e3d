"""Presence: who is on a channel now. Parked polls and open streams, and the distinct
subscribers among them by their token's `sub` claim; counted by each node over its own
subscriptions, sent between nodes as a small JSON object, and merged by the asker."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pushup.core.waiters import Subscription

# The most distinct `sub` values a presence lists (and a node sends the asker): a
# channel with more has them counted, as a lower bound, and says it is incomplete.
MAX_SUBS = 1000
# And at most this many bytes of them from one node, so an answer stays small whatever
# the tokens' `sub` claims look like.
MAX_SUB_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Presence:
    """A channel's parked polls and open streams, on one node or summed over nodes."""

    polls: int
    streams: int
    # Connections whose token had no `sub` claim (or that came without a token).
    anonymous: int
    # Distinct `sub` values, sorted, at most MAX_SUBS.
    subs: tuple[str, ...]
    # How many distinct `sub` values there are: exact when `complete`, else at least.
    sub_count: int
    # Whether `subs` lists every distinct `sub` (and so `sub_count` is exact).
    complete: bool = True
    # Nodes sharing the engine that are alive and how many answered in time (fewer
    # makes every figure a lower bound); None with an engine of one node.
    live_nodes: int | None = None
    counted_nodes: int | None = None

    @property
    def connections(self) -> int:
        return self.polls + self.streams

    def wire(self) -> dict[str, Any]:
        """This node's presence as it travels to an asking node."""
        return {
            "p": self.polls,
            "s": self.streams,
            "a": self.anonymous,
            "u": list(self.subs),
            "n": self.sub_count,
            "c": self.complete,
        }


EMPTY = Presence(0, 0, 0, (), 0)


def of_subscriptions(subs: Iterable[Subscription]) -> Presence:
    """One node's presence on a channel, from the subscriptions parked on it."""
    polls = streams = anonymous = 0
    who: set[str] = set()
    for sub in subs:
        if sub.stream:
            streams += 1
        else:
            polls += 1
        if sub.who is None:
            anonymous += 1
        else:
            who.add(sub.who)
    listed, complete = _bounded(sorted(who))
    return Presence(polls, streams, anonymous, listed, len(who), complete)


def from_wire(value: object) -> Presence:
    """Another node's answer; raises ValueError when it is not one."""
    if not isinstance(value, Mapping):
        raise ValueError("a node's presence is a JSON object")
    try:
        counts = [value["p"], value["s"], value["a"], value["n"]]
        subs, complete = value["u"], value["c"]
    except KeyError as exc:
        raise ValueError(f"a node's presence lacks {exc}") from None
    if not all(isinstance(n, int) and n >= 0 for n in counts):
        raise ValueError("a node's presence has a count that is not a whole number")
    if not isinstance(subs, list) or not all(isinstance(s, str) for s in subs):
        raise ValueError("a node's presence lists subs that are not strings")
    polls, streams, anonymous, sub_count = counts
    return Presence(polls, streams, anonymous, tuple(subs), sub_count, complete is True)


def merge(parts: Sequence[Presence], *, live_nodes: int, counted_nodes: int) -> Presence:
    """The presence over several nodes: connections add up, subs are the union (a
    subscriber with tabs on two nodes counts once)."""
    union: set[str] = set()
    for part in parts:
        union.update(part.subs)
    listed, complete = _bounded(sorted(union))
    complete = complete and all(part.complete for part in parts)
    # A node that could not list all of its subs still counted them.
    sub_count = len(union) if complete else max([len(union), *(p.sub_count for p in parts)])
    merged = Presence(
        sum(part.polls for part in parts),
        sum(part.streams for part in parts),
        sum(part.anonymous for part in parts),
        listed,
        sub_count,
        complete,
    )
    return replace(merged, live_nodes=live_nodes, counted_nodes=counted_nodes)


def _bounded(subs: list[str]) -> tuple[tuple[str, ...], bool]:
    """The first subs (in sorted order) within MAX_SUBS and MAX_SUB_BYTES; whether all."""
    kept: list[str] = []
    size = 0
    for sub in subs:
        size += len(sub.encode())
        if len(kept) == MAX_SUBS or size > MAX_SUB_BYTES:
            return tuple(kept), False
        kept.append(sub)
    return tuple(kept), True

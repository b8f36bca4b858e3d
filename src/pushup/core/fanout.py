"""Fan-out: the answers an engine's news brings to the subscriptions parked in this
process. A publication wakes the subscriptions on its channels whose time range it
falls in; a close answers those on the channels gone with a 410. Subscriptions that ask
the same (`Subscription.shape`) share one answer, built once."""

from __future__ import annotations

import time
from collections.abc import Sequence

from pushup.core.model import ChannelId, Hit, Message, Outcome, PollOutcome, closed_outcome, window
from pushup.core.waiters import Subscription, Waiters
from pushup.observe import metrics

_NONE_LOST: frozenset[ChannelId] = frozenset()


def fan_out(waiters: Waiters, messages: Sequence[Message], evicted: frozenset[ChannelId]) -> None:
    """Deliver stored `messages` (in id order, at least one) to the subscriptions they
    wake: polls are answered and unparked, streams sent them and kept parked."""
    started = time.perf_counter()
    # Per channel, the newest time published to it: one range query per channel,
    # however many messages a batch holds.
    newest: dict[ChannelId, float] = {}
    for message in messages:
        for channel_id in message.channels:
            newest[channel_id] = message.time
    woken: dict[Subscription, None] = {}
    for channel_id, newest_time in newest.items():
        woken.update(dict.fromkeys(waiters.started(channel_id, newest_time)))
    if not woken:
        return
    answers: dict[object, PollOutcome | None] = {}
    delivered: list[tuple[Subscription, PollOutcome]] = []
    first_id = messages[0].id
    for sub in woken:
        if sub.after >= first_id:
            # The poll's own read already covered some of these (an engine that
            # hears of publications late): never deliver a message twice.
            later = [message for message in messages if message.id > sub.after]
            outcome = _answer(sub, later, _NONE_LOST if sub.stream else evicted)
        elif evicted and sub.stream:
            # A stream gets a batch the cache could not hold whole, live: no gap.
            key = (sub.shape, "stream")
            if key in answers:
                outcome = answers[key]
            else:
                outcome = answers[key] = _answer(sub, messages, _NONE_LOST)
        elif sub.shape in answers:
            outcome = answers[sub.shape]
        else:
            outcome = answers[sub.shape] = _answer(sub, messages, evicted)
        if outcome is not None:
            delivered.append((sub, outcome))
    polls = []
    for sub, outcome in delivered:
        if sub.stream:
            sub.after = outcome.cursor  # it stays parked, having seen this far
        else:
            polls.append(sub)
    waiters.remove(polls)
    for sub, outcome in delivered:
        sub.receiver.deliver(outcome)
    # Counted once per fan-out, never per receiver.
    metrics.fanned_out(
        len(delivered), time.perf_counter() - started, time.time() - messages[0].time
    )


def answer_closed(waiters: Waiters, channel_ids: Sequence[ChannelId]) -> None:
    """Answer 410 every subscription on these channels (closed or expired), naming
    which of its channels are gone."""
    gone = set(channel_ids)
    affected: dict[Subscription, None] = {}
    for channel_id in channel_ids:
        for sub in waiters.on_channel(channel_id):
            affected[sub] = None
    if not affected:
        return
    waiters.remove(affected)
    metrics.count_error("channel_closed", len(affected))
    answers: dict[tuple[ChannelId, ...], Outcome] = {}
    for sub in affected:
        closed = tuple(c for c in sub.channels if c in gone)
        outcome = answers.get(closed)
        if outcome is None:
            outcome = answers[closed] = closed_outcome(closed)
        sub.receiver.deliver(outcome)


def _answer(
    sub: Subscription, messages: Sequence[Message], evicted: frozenset[ChannelId]
) -> PollOutcome | None:
    wanted = set(sub.channels)
    hits: list[Hit] = []
    for message in messages:
        if sub.start <= message.time <= sub.end:
            channels = tuple(c for c in message.channels if c in wanted)
            if channels:
                hits.append((message, channels))
    if not hits:
        return None
    hits, more = window(hits, sub.last, sub.limit)
    return PollOutcome(hits, hits[-1][0].id, not evicted.isdisjoint(wanted), more)

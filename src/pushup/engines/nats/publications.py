"""A publication as the stream stores it: one copy per message and channel, on the
channel's subject, in atomic batches of at most a thousand copies (the server's limit),
and what the publishing node does once they are stored."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from pushup.core.engine import Publication
from pushup.core.model import ChannelId, Message, MessageId
from pushup.engines.nats import layout, records
from pushup.engines.nats.layout import Subjects
from pushup.engines.nats.replica import Replica
from pushup.engines.nats.writer import Change, Part

# Copies in one atomic batch (the server's default limit).
MAX_BATCH_PARTS = 1000


def chunks(
    publications: Sequence[Publication], max_parts: int = MAX_BATCH_PARTS
) -> list[Sequence[Publication]]:
    """Consecutive runs of publications with at most `max_parts` copies each (a
    message's copies are never split: it has at most a hundred channels)."""
    runs: list[Sequence[Publication]] = []
    first, parts = 0, 0
    for n, (refs, _) in enumerate(publications):
        if parts and parts + len(refs) > max_parts:
            runs.append(publications[first:n])
            first, parts = n, 0
        parts += len(refs)
    runs.append(publications[first:])
    return runs


def decider(
    publications: Sequence[Publication],
    replica: Replica,
    subjects: Subjects,
    message_ttl_s: float,
    clock: Callable[[], float],
) -> Callable[[int], Change]:
    """The decision of one batch: ids above the highest issued, a copy per channel,
    each kept as long as the longest TTL among the message's and its channels'."""

    def decide(last_id: int) -> Change:
        replica.message_ids.advance_to(last_id)
        targets = replica.cache.lookup_all([refs for refs, _ in publications])
        messages = replica.cache.issue(targets, publications, replica.message_ids)
        now = clock()
        parts = []
        for channels, message in zip(targets, messages, strict=True):
            ttl = layout.ttl(max(message_ttl_s, *(channel.ttl_s for channel in channels)))
            headers = records.copy_headers(message, now)
            for channel_id in message.channels:
                parts.append(Part(subjects.messages(channel_id), message.data, headers, ttl))
        return Change(parts, messages[-1].id, (messages, now))

    return decide


def settle(replica: Replica, messages: Sequence[Message], now: float, max_messages: int) -> None:
    """Stored: the channels live a TTL from now, and the listener hears of the messages
    at once (those this node serves may have come back already, heard live). A channel
    sent more than `max_messages` of them dropped some: it is evicted."""
    channels = replica.cache.channels
    per_channel: Counter[ChannelId] = Counter()
    for message in messages:
        for channel_id in message.channels:
            per_channel[channel_id] += 1
            channel = channels.get(channel_id)
            if channel is not None:
                replica.extend(channel, now)
                channel.last_message_id = MessageId(max(channel.last_message_id or 0, message.id))
    new = [message for message in messages if message.id > replica.told]
    replica.told = max(replica.told, messages[-1].id)
    if new and replica.listener is not None:
        evicted = frozenset(c for c, n in per_channel.items() if n > max_messages)
        replica.listener.published(new, evicted)

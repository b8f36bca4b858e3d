"""What a NATS node's clock decides: messages aged out of its copy, channels expired for
every node, and the stream's subjects of the channels it expired purged.

Every node ages the messages it holds by its own clock. A due channel is expired with
one control entry, written by the first node that finds it due (the others then find
nothing left to do). A node that does not serve a channel does not hear its
publications, which keep it alive: before writing the expiry it looks up the channel's
newest copy and postpones the expiry if a publication extended it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from nats.js import JetStreamContext

from pushup.core.engine import EngineListener
from pushup.core.errors import EngineUnavailable
from pushup.core.model import ChannelEnd, ChannelId
from pushup.engines.nats import layout
from pushup.engines.nats.interest import Interest
from pushup.engines.nats.layout import Subjects
from pushup.engines.nats.records import Expired
from pushup.engines.nats.replica import Replica
from pushup.engines.nats.writer import UNREACHABLE, Change, control, need_task

# Writes the control change `decide` gives (None: nothing to write) and applies it;
# hands back the entry written, if any.
WriteControl = Callable[[Callable[[int], Change | None]], Awaitable[object]]


class Expiry:
    """Ages, expires and purges on behalf of one node, and tells its listener of the
    channels this node's own writes ended."""

    __slots__ = (
        "_clock",
        "_replica",
        "_stream",
        "_subjects",
        "_to_purge",
        "_write_control",
        "listener",
    )

    def __init__(
        self,
        replica: Replica,
        stream: str,
        subjects: Subjects,
        clock: Callable[[], float],
        write_control: WriteControl,
    ) -> None:
        self._replica = replica
        self._stream = stream
        self._subjects = subjects
        self._clock = clock
        self._write_control = write_control
        # Channels this node expired, whose subjects it still has to purge.
        self._to_purge: list[ChannelId] = []
        self.listener: EngineListener | None = None

    async def run(self, interest: Interest | None) -> None:
        """Age messages, and expire the due channels with one entry; before any call
        that reads or changes channels, and from the node's sweep."""
        replica = self._replica
        now = self._clock()
        if replica.next_due() > now:
            return
        replica.age(now)
        due = replica.due(now)
        if not due:
            return
        assert interest is not None
        channels = replica.cache.channels
        for channel_id in due:
            channel = channels.get(channel_id)
            if channel is None or interest.serving(channel_id):
                continue
            await need_task()
            published_at = await interest.last_publication(channel_id)
            if published_at is not None:
                replica.extend(channel, published_at)
                if channel.expires_at > now:
                    replica.cache.push_expiry(channel, channel.expires_at)

        names: dict[ChannelId, str | None] = {}

        def decide(last_id: int) -> Change | None:
            at = self._clock()
            ids = [c for c in due if (ch := channels.get(c)) is not None and ch.expires_at <= at]
            if not ids:
                return None
            names.update((c, channels[c].name) for c in ids)
            return control(self._subjects.expiry, Expired(tuple(ids)), last_id, layout.ttl(0))

        entry = await self._write_control(decide)
        if isinstance(entry, Expired):
            # Appended on top of the stream's last entry: a node that found them due as
            # well lost the race, read this entry and found nothing left to expire.
            self.tell_ended(entry.ids, names, "expired")
            self._to_purge.extend(entry.ids)

    def tell_ended(
        self,
        ids: Sequence[ChannelId],
        names: dict[ChannelId, str | None],
        reason: Literal["closed", "expired"],
    ) -> None:
        """Tell the listener of channels this node's own entry ended (`EngineListener.
        ended`): a close or an expiry written on top of the stream's last entry."""
        if self.listener is not None:
            now = self._clock()
            self.listener.ended([ChannelEnd(c, names.get(c), reason, now) for c in ids])

    async def purge(self, jsm: JetStreamContext) -> None:
        """Remove what the stream still holds of the channels this node expired; those
        left by a failure are tried again at the next sweep."""
        while self._to_purge:
            channel_id = self._to_purge[-1]
            try:
                for subject in (
                    self._subjects.channel(channel_id),
                    self._subjects.messages(channel_id),
                ):
                    await jsm.purge_stream(self._stream, subject=subject)
            except UNREACHABLE as exc:
                raise EngineUnavailable(f"cannot purge expired channels: {exc!r}") from exc
            self._to_purge.pop()

"""How values travel to and from the Lua scripts and the event channel: refs, id
lists, channel infos, messages, and the id bounds of a read."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pushup.core.engine import Publication
from pushup.core.errors import ChannelsNotFound
from pushup.core.idempotency import IdempotencyKey
from pushup.core.model import (
    MAX_ID,
    SERVER_RETENTION,
    ChannelEnd,
    ChannelId,
    ChannelInfo,
    ChannelPage,
    ChannelRef,
    Hit,
    Message,
    MessageId,
    ReadResult,
    Retention,
)


def ref(channel: ChannelRef) -> str:
    """A reference as the scripts take it: ids and names never mix up."""
    return f"i:{channel}" if isinstance(channel, int) else f"n:{channel}"


def _unref(raw: bytes) -> ChannelRef:
    text = raw.decode()
    return int(text[2:]) if text.startswith("i:") else text[2:]


def found(reply: list[Any]) -> list[Any]:
    """The values of a script's reply, or ChannelsNotFound naming the missing refs."""
    if reply[0] == b"missing":
        refs = [_unref(raw) if raw[:2] in (b"i:", b"n:") else int(raw) for raw in reply[1:]]
        raise ChannelsNotFound(refs)
    return reply[1:]


def ended(values: list[Any]) -> list[ChannelEnd]:
    """The channels a script closed or expired: id, name ('' for none), reason, when."""
    ends = []
    for i in range(0, len(values) - 3, 4):
        name = values[i + 1].decode()
        closed = values[i + 2] == b"closed"
        ends.append(
            ChannelEnd(
                ChannelId(int(values[i])),
                name or None,
                "closed" if closed else "expired",
                float(values[i + 3]),
            )
        )
    return ends


def ids(csv: bytes) -> tuple[ChannelId, ...]:
    """Channel ids from `id,id,...`."""
    return tuple(ChannelId(int(part)) for part in csv.split(b",")) if csv else ()


def resolved(values: list[Any]) -> tuple[int, list[tuple[ChannelId, int, float]]]:
    """`resolve.lua`'s answer: the last event published, then per channel its id, its
    newest message id ('' for none) and its expiry."""
    channels = [
        (ChannelId(int(values[i])), int(values[i + 1] or 0), float(values[i + 2]))
        for i in range(1, len(values), 3)
    ]
    return int(values[0]), channels


# Values per channel in a script's answer (`info` in `lua/common.lua`).
INFO_FIELDS = 9


def info(values: list[Any]) -> ChannelInfo:
    channel_id, name, ttl, expires_at, messages, last, keep_s, cap, owner = values
    return ChannelInfo(
        id=ChannelId(int(channel_id)),
        name=name.decode() if name else None,
        expires_at=float(expires_at),
        ttl_s=float(ttl),
        messages=int(messages),
        last_message_id=MessageId(int(last)) if last else None,
        retention=(
            Retention(float(keep_s) if keep_s else None, int(cap) if cap else None)
            if keep_s or cap
            else SERVER_RETENTION
        ),
        owner=owner.decode() if owner else None,
    )


def retention_args(retention: Retention) -> tuple[str, str]:
    """`create.lua`'s retention arguments ('' for the server's)."""
    keep_s, cap = retention.message_ttl_s, retention.max_messages
    return ("" if keep_s is None else repr(float(keep_s)), "" if cap is None else str(cap))


def listing_args(prefix: str | None, after: ChannelRef | None, limit: int) -> list[str | bytes]:
    """`list.lua`'s arguments: by id past the cursor, or by name among those starting
    with `prefix` (no UTF-8 string holds byte 0xFF: `prefix` + 0xFF bounds them)."""
    if prefix is None:
        low = "-inf" if not isinstance(after, int) else f"({after}"
        return ["id", low, "+inf", str(limit)]
    past = isinstance(after, str) and after >= prefix
    low = f"({after}" if past else f"[{prefix}"
    return ["name", low, b"[" + prefix.encode() + b"\xff", str(limit)]


def page(values: list[Any], by_name: bool) -> ChannelPage:
    """`list.lua`'s answer: the cursor of the next page ('' for none), then infos."""
    infos = [info(values[i : i + INFO_FIELDS]) for i in range(1, len(values), INFO_FIELDS)]
    cursor = values[0]
    after: ChannelRef | None = None
    if cursor:
        after = cursor.decode() if by_name else int(cursor)
    return ChannelPage(infos, after)


def publish_args(
    max_messages: str,
    max_cache_bytes: str,
    publications: Sequence[Publication],
    key: IdempotencyKey | None = None,
) -> list[str | bytes]:
    """`publish.lua`'s arguments: the limits, then per publication its refs and data,
    then the idempotency key's digest, the request's fingerprint and the window in ms
    (all '' without a key)."""
    args: list[str | bytes] = [max_messages, max_cache_bytes, str(len(publications))]
    for refs, data in publications:
        args.append(str(len(refs)))
        args.extend(map(ref, refs))
        args.append(data)
    if key is None:
        args += ("", "", "")
    else:
        # At least a millisecond: PX refuses 0.
        args += (key.digest, key.fingerprint, str(max(1, math.ceil(key.window_s * 1000))))
    return args


def published(publications: Sequence[Publication], values: list[Any]) -> list[Message]:
    """The messages `publish.lua` stored: per publication its id and channel ids."""
    messages = []
    for (_, data), raw_id, targets in zip(publications, values[::2], values[1::2], strict=True):
        message_id = int(raw_id)
        messages.append(Message(MessageId(message_id), message_id / 1_000_000, ids(targets), data))
    return messages


def read_result(values: list[Any]) -> ReadResult:
    """`read.lua`'s answer: the gap flag, the high water, then per message its id, the
    matched channels, its channels and its data."""
    hits: list[Hit] = []
    for i in range(2, len(values), 4):
        message_id = int(values[i])
        message = Message(
            MessageId(message_id), message_id / 1_000_000, ids(values[i + 2]), values[i + 3]
        )
        hits.append((message, ids(values[i + 1])))
    return ReadResult(hits, values[0] == 1, MessageId(int(values[1])))


def publication_event(rest: bytes) -> tuple[list[Message], frozenset[ChannelId]]:
    """`<evicted ids>\\n` then per message `<id> <channel ids> <size>\\n<payload>`."""
    end = rest.index(b"\n")
    evicted = frozenset(ids(rest[:end]))
    messages = []
    pos = end + 1
    while pos < len(rest):
        end = rest.index(b"\n", pos)
        raw_id, targets, size = rest[pos:end].split(b" ")
        message_id = int(raw_id)
        pos = end + 1 + int(size)
        messages.append(
            Message(
                MessageId(message_id), message_id / 1_000_000, ids(targets), rest[end + 1 : pos]
            )
        )
    return messages, evicted


def lowest_wanted_id(since: MessageId | None, start: float | None) -> int:
    """The smallest id wanted: after `since`, with time (id / 1e6, a float) >= start."""
    low = 1 if since is None else since + 1
    if start is not None:
        if start * 1_000_000 > MAX_ID:
            return MAX_ID + 1
        by_time = max(1, math.ceil(start * 1_000_000) - 1)
        while by_time / 1_000_000 < start:
            by_time += 1
        low = max(low, by_time)
    return low


def highest_wanted_id(end: float) -> int:
    """The largest id whose time (id / 1e6, a float) is at most `end`."""
    if end * 1_000_000 > MAX_ID:
        return MAX_ID
    by_time = math.floor(end * 1_000_000) + 2
    while by_time / 1_000_000 > end:
        by_time -= 1
    return by_time

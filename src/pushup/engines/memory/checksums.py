"""The journal's row checksums: a CRC32 over a row's values as the engine wrote them
(channels, messages, idempotency answers), so `sqlite.py` can tell a row damaged where
SQLite's own checks cannot see (they cover the file's structure, not the values).
SQLite computes them too, as the function `channel_crc`, when compaction changes a row
in place."""

from __future__ import annotations

import struct
import zlib

_CHANNEL_ROW = struct.Struct("<qddqq")
_RETENTION_ROW = struct.Struct("<dq")


def channel_crc(
    channel_id: int,
    name: str | bytes | None,
    ttl_s: float,
    expires_at: float,
    last_message_id: int | None,
    dropped_through: int,
    message_ttl_s: float | None = None,
    max_messages: int | None = None,
    owner: str | bytes | None = None,
) -> int:
    """The checksum of a channel row: over its values as the engine wrote them. A
    retention of its own and an owner are summed only when there is one: a row without,
    as version 2 wrote it, checks the same."""
    head = _CHANNEL_ROW.pack(
        channel_id,
        ttl_s,
        expires_at,
        -1 if last_message_id is None else last_message_id,
        dropped_through,
    )
    # 0xFF never occurs in UTF-8: no name differs from every name.
    tail = b"\xff" if name is None else name if isinstance(name, bytes) else name.encode()
    crc = zlib.crc32(tail, zlib.crc32(head))
    if message_ttl_s is not None or max_messages is not None:
        retention = _RETENTION_ROW.pack(
            -1.0 if message_ttl_s is None else message_ttl_s,
            -1 if max_messages is None else max_messages,
        )
        crc = zlib.crc32(retention, crc)
    if owner is None:
        return crc
    # 0xFE never occurs in UTF-8 either: the owner cannot be read as part of the name.
    return zlib.crc32(b"\xfe" + (owner if isinstance(owner, bytes) else owner.encode()), crc)


def message_crc(message_id: int, channels: bytes, data: bytes) -> int:
    """The checksum of a message row: its id, channel list and data."""
    head = zlib.crc32(channels, zlib.crc32(message_id.to_bytes(8, "little", signed=True)))
    return zlib.crc32(data, head)


def answer_crc(answer: bytes) -> int:
    """The checksum of an idempotency answer's row: over the encoded answer, which holds
    its digest and expiry too."""
    return zlib.crc32(answer)

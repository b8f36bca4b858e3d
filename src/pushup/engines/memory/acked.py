"""The data directory's record of what the server acknowledged, kept apart from the
journal so that damage to the journal cannot erase it.

After each committed group, before its callers are answered, the writer thread writes
the highest message and channel ids acknowledged so far and how many messages were
acknowledged in all into the `acknowledged` file: one `pwrite` of 44 bytes into one of
two preallocated pages, in turn, each record with a sequence number and a CRC32 (a torn
write leaves the other page to read). At start the journal compares what it holds with
this record, so a journal that lost acknowledged changes says so (`recovery.py`).

No fsync per group: the record is written after the commit's own fsync, and the page
cache keeps it across a crash of the process; after a power loss it may be a few
seconds older than the journal, never newer, so only a loss within those seconds would
go unnoticed. It is fsynced when the journal closes. Overwriting preallocated pages
needs no new space, so a full disk does not stop it.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

ACKNOWLEDGED = "acknowledged"
_MAGIC = b"pushack1"
# magic, sequence, message id, channel id, messages acknowledged; then their CRC32.
_RECORD = struct.Struct("<8sQqqq")
_CRC = struct.Struct("<I")
_PAGE = 4096  # one record per page, so a torn write spoils one record at most


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """The newest ids acknowledged, and how many messages were acknowledged in all."""

    message_id: int = 0
    channel_id: int = 0
    messages: int = 0


class AckFile:
    """The `acknowledged` file of a data directory, open from `open` to `close`."""

    __slots__ = ("_fd", "_sequence", "failing", "path", "unreadable")

    def __init__(self, directory: Path) -> None:
        self.path = directory / ACKNOWLEDGED
        self._fd: int | None = None
        self._sequence = 0
        # The file held records, none of them intact.
        self.unreadable = False
        # A write failed (said once).
        self.failing = False

    def open(self) -> Acknowledged | None:
        """The newest intact record; None if there is none (a new data directory, or
        one from before this record existed). Raises OSError."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            data = os.pread(fd, 2 * _PAGE, 0)
            if len(data) < 2 * _PAGE:
                # Both pages exist from now on: a later write needs no space.
                os.pwrite(fd, bytes(2 * _PAGE - len(data)), len(data))
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        records = [_parse(data[page * _PAGE : page * _PAGE + _PAGE]) for page in (0, 1)]
        intact = [record for record in records if record is not None]
        if not intact:
            self.unreadable = any(data)
            return None
        sequence, acknowledged = max(intact, key=lambda record: record[0])
        self._sequence = sequence
        return acknowledged

    def write(self, acknowledged: Acknowledged) -> None:
        """Record what is acknowledged now (writer thread). Raises OSError."""
        assert self._fd is not None
        self._sequence += 1
        record = _RECORD.pack(
            _MAGIC,
            self._sequence,
            acknowledged.message_id,
            acknowledged.channel_id,
            acknowledged.messages,
        )
        record += _CRC.pack(zlib.crc32(record))
        os.pwrite(self._fd, record, (self._sequence % 2) * _PAGE)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None


def _parse(page: bytes) -> tuple[int, Acknowledged] | None:
    """A page's record and its sequence number; None unless intact."""
    size = _RECORD.size
    if len(page) < size + _CRC.size:
        return None
    record = page[:size]
    (crc,) = _CRC.unpack_from(page, size)
    if zlib.crc32(record) != crc:
        return None
    magic, sequence, message_id, channel_id, messages = _RECORD.unpack(record)
    if magic != _MAGIC:
        return None
    return sequence, Acknowledged(message_id, channel_id, messages)

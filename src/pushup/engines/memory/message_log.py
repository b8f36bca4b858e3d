"""A channel's cached messages, oldest first: an array searched by bisection.

The paper keeps each channel's messages in a B-tree keyed by time. Here ids only grow
(`IdClock`) and a channel caches its messages in the order they were issued, so the
sorted structure reduces to an array: a new message is appended, the oldest leave from
the front, and a read starts at a binary search for its cursor. Against
`sortedcontainers.SortedKeyList` this saves the key function and the sorted insert on
every publication, and the index bookkeeping on every eviction.

Leaving from the front does not move the array: a start offset advances, the slot is
cleared (so an evicted message is freed at once), and the array is compacted once the
cleared front is half of it, which keeps every operation O(1) amortized.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import islice
from operator import attrgetter

from pushup.core.model import Message

_id = attrgetter("id")
# Cleared slots at the front are compacted away only past this many, so a channel
# holding a few messages never copies its array.
_COMPACT_AFTER = 32


class MessageLog:
    """Messages in id order; `append` takes only ids above the newest held."""

    __slots__ = ("_items", "_start")

    def __init__(self) -> None:
        self._items: list[Message | None] = []
        self._start = 0  # slots before it are cleared

    def __len__(self) -> int:
        return len(self._items) - self._start

    def __iter__(self) -> Iterator[Message]:
        return islice(self._items, self._start, None)  # type: ignore[arg-type]

    def __contains__(self, message: Message) -> bool:
        index = self._find(message)
        return index is not None

    def append(self, message: Message) -> None:
        """A message newer than every one held."""
        items = self._items
        if len(items) > self._start and items[-1].id >= message.id:  # type: ignore[union-attr]
            raise ValueError(f"message {message.id} is not newer than the newest held")
        items.append(message)

    def oldest(self) -> Message:
        return self._items[self._start]  # type: ignore[return-value]

    def pop_oldest(self) -> Message:
        items, start = self._items, self._start
        message = items[start]
        if message is None:
            raise IndexError("pop from an empty message log")
        items[start] = None
        start += 1
        if start == len(items):
            items.clear()
            start = 0
        elif start > _COMPACT_AFTER and start * 2 > len(items):
            del items[:start]
            start = 0
        self._start = start
        return message

    def remove(self, message: Message) -> None:
        """Drop `message` wherever it is (the byte budget takes the oldest overall,
        which may sit behind older messages of another channel)."""
        index = self._find(message)
        if index is None:
            raise ValueError(f"message {message.id} is not held")
        if index == self._start:
            self.pop_oldest()
        else:
            del self._items[index]

    def since(self, low: int) -> Iterator[Message]:
        """The messages with `low <= id`, oldest first."""
        items, start = self._items, self._start
        # A re-poll's cursor is usually at the newest message, or before the oldest.
        if start == len(items) or items[-1].id < low:  # type: ignore[union-attr]
            return iter(())
        if items[start].id >= low:  # type: ignore[union-attr]
            index = start
        else:
            index = bisect_left(items, low, start, len(items), key=_id)
        return islice(items, index, None)  # type: ignore[arg-type]

    def clear(self) -> None:
        self._items.clear()
        self._start = 0

    def _find(self, message: Message) -> int | None:
        items = self._items
        index = bisect_left(items, message.id, self._start, len(items), key=_id)
        if index < len(items) and items[index] is message:
            return index
        return None

"""The embedded engine's byte budget: the cached messages, oldest first, and their size.

A publication adds its message at the back (ids only grow, so this is publication
order); a message leaves once no channel caches it any more, or from the front when
the cache is over `--max-cache-bytes`. Both are O(1): no scan, whatever the cache holds.
"""

from __future__ import annotations

from collections import OrderedDict

from pushup.core.model import Message, MessageId


class CacheBudget:
    """Every cached message once (however many channels hold it), and their bytes."""

    __slots__ = ("_messages", "bytes", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bytes = 0
        self._messages: OrderedDict[MessageId, Message] = OrderedDict()

    def __len__(self) -> int:
        return len(self._messages)

    def add(self, message: Message) -> None:
        """A new message, newer than every one held."""
        self._messages[message.id] = message
        self.bytes += len(message.data)

    def discard(self, message: Message) -> None:
        """No channel caches `message` any more."""
        if self._messages.pop(message.id, None) is not None:
            self.bytes -= len(message.data)

    def over(self) -> bool:
        return self.bytes > self.limit

    def pop_oldest(self) -> Message:
        """The oldest message, no longer counted: the caller drops it from its channels."""
        _, message = self._messages.popitem(last=False)
        self.bytes -= len(message.data)
        return message

"""The names this engine gives keys and pub/sub channels in Redis, outside the
layout of channels and messages that the scripts' shared head (`lua/common.lua`) keeps."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str
    # Pub/sub spans every database of a Redis: its channels are named after ours.
    events: str  # publications and closes, heard by every node
    control: str  # questions to every node (subscriber counts)
    reply_prefix: str  # + a node id: the answers to that node's questions
    nodes: str  # sorted set: node ids by their last heartbeat
    last_message: str  # the last message id issued
    last_event: str  # the last event published

    @classmethod
    def of(cls, prefix: str, db: int) -> Keys:
        return cls(
            prefix=prefix,
            events=f"{prefix}events:{db}",
            control=f"{prefix}control:{db}",
            reply_prefix=f"{prefix}reply:{db}:",
            nodes=f"{prefix}nodes",
            last_message=f"{prefix}seq:message",
            last_event=f"{prefix}seq:event",
        )

"""What a benchmark needs from a server under test, whatever its API.

Each target (PushUp, the thread-per-request MLP baseline, Nchan) starts its own server
processes on free loopback ports and translates the benchmark's few operations into its
own wire format. The load generator only ever sends the bytes a target builds and hands
the responses back to it, so one client serves every target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class PollState:
    """Where one subscriber stands in a channel: what to send on its next poll.

    `cursor` is the target's own resume token (PushUp's cursor, Nchan's
    Last-Modified/Etag pair); None before the first answer.
    """

    channel: str
    cursor: object = None


@dataclass
class PollAnswer:
    """A subscriber's response, as the target understood it."""

    status: int
    # The messages' data, raw: one item per message, or a whole answer holding several
    # (the load generator scans bytes for timed payloads, so a target need not decode).
    payloads: list[bytes] = field(default_factory=list)
    cursor: object = None


class Target(Protocol):
    """A server under test."""

    name: str
    host: str
    port: int

    def start(self) -> None:
        """Start the server processes; return once they answer."""

    def stop(self) -> None:
        """Stop every process started; idempotent."""

    def pids(self) -> list[int]:
        """Processes whose memory and CPU count as the server's (children included)."""

    def create_channel(self) -> str:
        """A new channel, named as the target's requests name it (blocking HTTP)."""

    def subscribers(self, channel: str) -> int:
        """Polls parked on a channel right now (blocking HTTP)."""

    def poll_request(self, state: PollState, timeout_s: float) -> bytes:
        """The whole HTTP/1.1 request (keep-alive) for a subscriber's next poll."""

    def poll_answer(self, status: int, headers: dict[str, str], body: bytes) -> PollAnswer:
        """Understand one poll response (header names lower-case)."""

    def publish_request(self, channel: str, payload: bytes) -> bytes:
        """The whole HTTP/1.1 request (keep-alive) publishing `payload` to a channel."""

"""The first answers the embedded engine keeps for idempotency keys, each until its
window ends (and, with a journal, in it too: a restart finds them again)."""

from __future__ import annotations

import heapq
import math

from pushup.core.idempotency import Answer


class Answers:
    """Answers by key digest, and a heap of their expiries: a lookup drops the expired
    ones from the front, never scanning."""

    __slots__ = ("_by_digest", "_expiry", "next_due")

    def __init__(self) -> None:
        self._by_digest: dict[str, Answer] = {}
        self._expiry: list[tuple[float, str]] = []
        # When the oldest answer expires: a caller checks it before calling `expire`.
        self.next_due = math.inf

    def add(self, answer: Answer) -> None:
        self._by_digest[answer.digest] = answer
        heapq.heappush(self._expiry, (answer.expires_at, answer.digest))
        self.next_due = self._expiry[0][0]

    def drop(self, answer: Answer) -> None:
        """Forget this answer (its publication was never stored); its heap entry goes
        when due."""
        if self._by_digest.get(answer.digest) is answer:
            del self._by_digest[answer.digest]

    def find(self, digest: str, now: float) -> Answer | None:
        """The live answer to this key, if any."""
        self.expire(now)
        return self._by_digest.get(digest)

    def expire(self, now: float) -> None:
        expiry, by_digest = self._expiry, self._by_digest
        while expiry and expiry[0][0] <= now:
            _, digest = heapq.heappop(expiry)
            answer = by_digest.get(digest)
            # A key freed and used again has a newer answer, with a later expiry.
            if answer is not None and answer.expires_at <= now:
                del by_digest[digest]
        self.next_due = expiry[0][0] if expiry else math.inf

    def __len__(self) -> int:
        return len(self._by_digest)

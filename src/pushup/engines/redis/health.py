"""What `/health` says of Redis: reachable or not, since when and why."""

from __future__ import annotations

import time

from pushup.core.engine import EngineHealth


class Health:
    """Redis as last seen by a call (the sweep and the heartbeat make one several times
    a second) and by the event connection; read without any I/O."""

    __slots__ = ("_down_reason", "_down_since", "_events_down_since")

    def __init__(self) -> None:
        # Since when (epoch seconds) and why calls have failed; None while they work.
        self._down_since: float | None = None
        self._down_reason = ""
        # Since when the event connection has been down, once it was up.
        self._events_down_since: float | None = None

    def unreachable(self, exc: BaseException) -> None:
        """A call failed because Redis is out of reach."""
        if self._down_since is None:
            self._down_since = time.time()
        self._down_reason = str(exc) or type(exc).__name__

    def reachable(self) -> None:
        """A call went through."""
        self._down_since = None

    def events_down(self) -> None:
        """The event connection, which was up, is lost."""
        self._events_down_since = time.time()

    def events_up(self) -> None:
        self._events_down_since = None

    def report(
        self,
        node_id: str,
        live_nodes: int,
        *,
        events_live: bool,
        closed: bool,
        received_publications: int = 0,
    ) -> EngineHealth:
        """`received_publications`: the publication events this node heard so far (every
        node hears every publication: the figure a cluster's inbound traffic follows)."""
        details: dict[str, object] = {"kind": "redis", "node": node_id}
        if self._down_since is not None:
            since, reason = self._down_since, self._down_reason
        elif not events_live and not closed:
            since = self._events_down_since or time.time()
            reason = "the event connection to Redis is down; reconnecting"
        else:
            details.update(
                state="reachable",
                live_nodes=live_nodes,
                received_publications=received_publications,
            )
            return EngineHealth(True, details)
        details.update(state="unreachable", since=since, reason=reason)
        return EngineHealth(False, details)

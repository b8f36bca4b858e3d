"""What `/health` says of NATS: reachable or not, since when and why."""

from __future__ import annotations

import time

from pushup.core.engine import EngineHealth


class Health:
    """NATS as last seen by the connection and by the calls; read without any I/O."""

    __slots__ = ("_down_reason", "_down_since")

    def __init__(self) -> None:
        self._down_since: float | None = None
        self._down_reason = ""

    def unreachable(self, reason: str) -> None:
        if self._down_since is None:
            self._down_since = time.time()
        self._down_reason = reason

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def reachable(self) -> None:
        self._down_since = None

    def report(
        self,
        node_id: str,
        live_nodes: int,
        *,
        connected: bool,
        served_channels: int = 0,
        received_publications: int = 0,
    ) -> EngineHealth:
        """`served_channels`: channels whose publications this node hears;
        `received_publications`: the copies it received so far, live or fetched."""
        details: dict[str, object] = {"kind": "nats", "node": node_id}
        if self._down_since is None and connected:
            details.update(
                state="reachable",
                live_nodes=live_nodes,
                served_channels=served_channels,
                received_publications=received_publications,
            )
            return EngineHealth(True, details)
        since = self._down_since or time.time()
        reason = self._down_reason or "the connection to NATS is down; reconnecting"
        details.update(state="unreachable", since=since, reason=reason)
        return EngineHealth(False, details)

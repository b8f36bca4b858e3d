"""Node membership: each node keeps a heartbeat in Redis (a sorted set of node ids
by last-seen time), and learns from it how many nodes are live."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket

from pushup.core.errors import EngineUnavailable
from pushup.engines.redis.health import Health
from pushup.engines.redis.scripts import UNREACHABLE, Scripts
from pushup.engines.redis.tasks import stop

# A node missing this many heartbeats in a row is no longer counted as live.
_MISSED_BEATS = 3


class Membership:
    """This node's heartbeat, sent every `heartbeat_s`, and the live nodes it counts."""

    __slots__ = (
        "_beater",
        "_closed",
        "_health",
        "_heartbeat_s",
        "_key",
        "_scripts",
        "live_nodes",
        "node_id",
        "stale_s",
    )

    def __init__(self, scripts: Scripts, health: Health, key: str, heartbeat_s: float) -> None:
        self._scripts = scripts
        self._health = health
        self._key = key
        self._heartbeat_s = heartbeat_s
        self.node_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        # Seconds without a heartbeat after which a node is no longer live (as a script
        # argument).
        self.stale_s = repr(_MISSED_BEATS * heartbeat_s)
        self.live_nodes = 0
        self._beater: asyncio.Task[None] | None = None
        self._closed = False

    async def beat(self, *, leave: bool = False) -> None:
        """Tell Redis this node is alive (or, with `leave`, gone); learn how many are."""
        try:
            live = await self._scripts.run_node(
                "heartbeat", [self._key], [self.node_id, self.stale_s, "1" if leave else ""]
            )
        except UNREACHABLE as exc:
            self._health.unreachable(exc)
            raise EngineUnavailable(f"cannot reach Redis: {exc}") from exc
        self._health.reachable()
        self.live_nodes = int(live)

    def start(self) -> None:
        self._beater = asyncio.create_task(self._beat_forever(), name="pushup-redis-heartbeat")

    async def stop(self) -> None:
        self._closed = True
        if self._beater is not None:
            await stop(self._beater)
            self._beater = None

    async def _beat_forever(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._heartbeat_s)
            # A failure is logged by the sweep, which fails alike; health reports it.
            with contextlib.suppress(EngineUnavailable):
                await self.beat()

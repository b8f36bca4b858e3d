"""A worker's view of itself: snapshots of its figures, shared with its siblings and
published every second to the dashboard's stats channel while a dashboard watches.

Gauges are read here, when a snapshot is taken (a scrape, the one-second tick), from
the structures the server keeps anyway: nothing counts them on the hot path.

Every process of every node sharing an engine publishes its own figures, tagged with
its node and worker, to one stats channel for the whole deployment, so a dashboard
opened on any node shows them all. The channel's name is random (`pushup:stats:` and
a secret): the first node to need it makes it, the others find it by listing that
prefix, and where two made one at once, all settle on the first by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pushup.core.errors import ChannelsNotFound, EngineUnavailable
from pushup.core.events import STATS_CHANNEL_PREFIX
from pushup.core.model import ChannelId
from pushup.observe.intervals import TOP_N, Intervals
from pushup.observe.metrics import FIGURES
from pushup.observe.peers import Peers
from pushup.observe.sources import ObservedHub, ObservedServer

log = logging.getLogger("pushup.observe")

TICK_S = 1.0
# The stats channel lives while dashboards watch (each tick is activity), and goes
# away a while after the last one closed.
STATS_CHANNEL_TTL_S = 300.0
# With a shared engine, every this many ticks a process looks for the stats channel
# and asks every node whether a dashboard watches it (one listing of one channel, with
# its subscribers counted over every node).
LOOK_EVERY_TICKS = 5


@dataclass(frozen=True, slots=True)
class Identity:
    """Who this process is among its node's workers (set by `pushup.worker`)."""

    worker: str = "0"
    # The directory the workers share their snapshots in; None for a lone process.
    shared_dir: Path | None = None
    # Names the node's stats channel: the same for every worker of a node, unknown
    # outside it (only `/dashboard`, behind the publisher check, tells it).
    stats_secret: str | None = None


_identity = Identity()
_current: Observer | None = None


def set_identity(identity: Identity) -> None:
    global _identity
    _identity = identity


def current() -> Observer:
    """The running server's observer (one server per process)."""
    if _current is None:
        raise RuntimeError("no server is running in this process")
    return _current


class Observer:
    def __init__(self, hub: ObservedHub, http: ObservedServer, who: Identity | None = None) -> None:
        who = who or _identity
        self.hub = hub
        self.http = http
        self.worker = who.worker
        self.peers = None if who.shared_dir is None else Peers(who.shared_dir, who.worker)
        self.stats_channel = STATS_CHANNEL_PREFIX + (who.stats_secret or secrets.token_hex(12))
        # Who this process is on the dashboard: its node (host and port), its worker.
        self.node = ""
        self._channel_id: ChannelId | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reporting: asyncio.Task[None] | None = None
        self._ticks = 0
        # Until when (monotonic) a dashboard on another node watches, as last asked.
        self._watched_until = 0.0
        self.intervals = Intervals()

    def start(self, node: str = "") -> None:
        global _current
        _current = self
        self.node = node
        if self.peers is not None:
            previous = self.peers.previous()
            if previous is not None:
                FIGURES.absorb(previous)
            self.peers.write(self.snapshot())
        self.intervals = Intervals()
        self._timer = asyncio.get_running_loop().call_later(TICK_S, self._tick)

    async def stop(self) -> None:
        global _current
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reporting is not None:
            self._reporting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reporting
        if self.peers is not None and _current is self:
            self.peers.write(self.snapshot())  # the successor counts on from here
        if _current is self:
            _current = None

    # -- snapshots -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """This worker's figures now: gauges read from the server, counters as counted."""
        http = self.http
        snapshot: dict[str, Any] = {
            "node": self.node,
            "worker": self.worker,
            "pid": os.getpid(),
            "time": time.time(),
            "parked": self.hub.parked(),
            "connections": len(http.connections),
            "streams": len(http.heartbeat),
            "channels": None,
            "cached_messages": None,
            "cached_bytes": None,
        }
        # The figures are the users' data: the dashboard's own channel is left out.
        stats = self.hub.cache_stats(() if self._channel_id is None else (self._channel_id,))
        if stats is not None:
            snapshot["channels"] = stats.channels
            snapshot["cached_messages"] = stats.messages
            snapshot["cached_bytes"] = stats.bytes
        snapshot.update(FIGURES.dump())
        snapshot["interval"] = self.intervals.latest
        return snapshot

    def snapshots(self) -> list[dict[str, Any]]:
        """Every worker of this node: this one live, the others as last shared."""
        mine = self.snapshot()
        if self.peers is None:
            return [mine]
        others = self.peers.others()
        return [mine, *sorted(others, key=lambda snap: _slot_order(snap["worker"]))]

    def dashboard_figures(self) -> list[dict[str, Any]]:
        """What the dashboard shows of each worker: everything but the histograms."""
        return [_summary(snap) for snap in self.snapshots()]

    # -- the dashboard's stats channel ------------------------------------------------

    async def ensure_stats_channel(self) -> None:
        """Find the deployment's stats channel, or make it, so a dashboard can subscribe."""
        if not await self._find_stats_channel():
            info, _ = await self.hub.get_or_create_channel(STATS_CHANNEL_TTL_S, self.stats_channel)
            self._adopt(info.id, self.stats_channel)

    async def _find_stats_channel(self) -> bool:
        """Adopt the first stats channel by name, if there is one; and remember until
        when a dashboard watches it on any node."""
        page, counts = await self.hub.list_channels(STATS_CHANNEL_PREFIX, None, 1)
        if not page.channels or page.channels[0].name is None:
            return False
        self._adopt(page.channels[0].id, page.channels[0].name)
        if counts and counts[0].total:
            self._watched_until = time.monotonic() + (LOOK_EVERY_TICKS + 1) * TICK_S
        return True

    def _adopt(self, channel_id: ChannelId, name: str) -> None:
        self._channel_id = channel_id
        self.stats_channel = name

    def _tick(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(TICK_S, self._tick)
        self._ticks += 1
        self.intervals.take(() if self._channel_id is None else (self._channel_id,))
        if self.peers is not None:
            self.peers.write(self.snapshot())
        if self._reporting is not None:
            return  # the last report is still waiting on the engine
        look = self.hub.shared and self._ticks % LOOK_EVERY_TICKS == 0
        if not look and not self._watched():
            return  # nobody watches: publish nothing
        self._reporting = asyncio.ensure_future(self._report(look))
        self._reporting.add_done_callback(self._reported)

    def _watched(self) -> bool:
        channel_id = self._channel_id
        if channel_id is None:
            return False
        return bool(self.hub.subscribers(channel_id)) or time.monotonic() < self._watched_until

    def _reported(self, task: asyncio.Task[None]) -> None:
        self._reporting = None
        if not task.cancelled() and task.exception() is not None:
            log.error("cannot publish the dashboard's figures", exc_info=task.exception())

    async def _report(self, look: bool) -> None:
        """Publish this process's figures to the stats channel while a dashboard
        watches it, here or (`look`: asked now and then) on another node."""
        hub = self.hub
        try:
            if look:
                await self._find_stats_channel()
            if not self._watched() or self._channel_id is None:
                return
            figures = _summary(self.snapshot())
            figures["busiest"] = [list(pair) for pair in hub.busiest(TOP_N, (self._channel_id,))]
            # Not counted as a publication: the figures are not the users' messages.
            await hub.publish([((self._channel_id,), orjson.dumps(figures))], counted=False)
        except ChannelsNotFound:
            self._channel_id = None  # closed, or expired
        except EngineUnavailable:
            pass  # the engine logs its outage; the next tick tries again


def _summary(snapshot: dict[str, Any]) -> dict[str, Any]:
    """What the dashboard shows of a snapshot: everything but the histograms."""
    return {
        key: value
        for key, value in snapshot.items()
        if key not in ("fanout", "delivery", "requests")
    }


def _slot_order(worker: str) -> tuple[int, str]:
    return (int(worker), worker) if worker.isdigit() else (1 << 30, worker)

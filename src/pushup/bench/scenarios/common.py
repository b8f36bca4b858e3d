"""What the scenarios share: options, a running target, waiting with a deadline."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pushup.bench.targets import Target, make_target


@dataclass(frozen=True)
class Options:
    """Every knob of `pushup bench`; each scenario reads the ones it needs."""

    targets: tuple[str, ...] = ("pushup", "mlp", "nchan")
    subscribers: tuple[int, ...] = (10_000,)
    channels: int = 1
    rounds: int = 3
    publications: int = 20_000
    publishers: int = 32
    depth: int = 1
    client_processes: int = 2
    time_scale: float = 1.0
    payload_pad: int = 0
    deadline_s: float = 120.0
    extra: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def running(name: str) -> Iterator[Target]:
    target = make_target(name)
    target.start()
    try:
        yield target
    finally:
        target.stop()


def wait_until(probe: Callable[[], bool], deadline_s: float, interval_s: float = 0.05) -> bool:
    """Poll `probe` until true or the deadline passes; whether it became true."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if probe():
            return True
        time.sleep(interval_s)
    return probe()


# A wait ends early after this long without progress (a server that stopped taking
# connections, say): the row then records how far it got.
STALL_S = 10.0


def wait_progress(probe: Callable[[], int | None], goal: int, deadline_s: float) -> int | None:
    """Poll `probe` until it reaches `goal`, stalls for STALL_S, or `deadline_s` passes;
    the last value seen (None: the probe could not answer)."""
    start = time.monotonic()
    end = start + deadline_s
    best, best_at = -1, start
    value = probe()
    while (value is None or value < goal) and time.monotonic() < end:
        now = time.monotonic()
        if value is not None and value > best:
            best, best_at = value, now
        elif now - best_at > min(STALL_S, deadline_s):
            break
        time.sleep(0.1)
        value = probe()
    return value


def parked_on(target: Target, channel: str) -> int | None:
    """Polls parked on a channel as the server says; None when it does not answer
    (an overloaded baseline must not end the run)."""
    try:
        return target.subscribers(channel)
    except Exception:
        return None


def subscribers_on(target: Target, channels: list[str]) -> int:
    return sum(target.subscribers(channel) for channel in channels)

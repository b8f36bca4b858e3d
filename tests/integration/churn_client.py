"""Load for the churn test, run as its own process (its sockets count against its own
open-files limit): `hold N` parks N long polls until stdin closes; `churn RATE COUNT`
opens COUNT connections, RATE a second at most, each sending a poll and leaving.

Every connection ends with a reset (SO_LINGER 0), not a FIN: tens of thousands of
client-side TIME_WAIT ports would otherwise fill 127.0.0.1's ephemeral range for a
minute, and the tests after this one could not bind a free port."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import time
from typing import cast

import uvloop

_RESET = struct.pack("ii", 1, 0)
# Connections one churning process holds open at once, at most: a tenth of a second's
# worth at 1,000 a second (in step, about 20 are).
_IN_FLIGHT = 100


class _Client(asyncio.Protocol):
    """Sends one request and ignores the answer; the connection is closed by its owner."""

    def __init__(self, request: bytes) -> None:
        self.request = request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        # uvloop's transports do not subclass asyncio's.
        cast(asyncio.WriteTransport, transport).write(self.request)


def _poll(port: int, channel: str) -> bytes:
    target = f"/subscribe?channels={channel}&timeout=290"
    return f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


async def hold(port: int, channel: str, count: int) -> None:
    loop = asyncio.get_running_loop()
    request = _poll(port, channel)
    held = []
    for start in range(0, count, 500):
        batch = range(start, min(start + 500, count))
        held += await asyncio.gather(
            *(loop.create_connection(lambda: _Client(request), "127.0.0.1", port) for _ in batch)
        )
    print("ready", len(held), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    for transport, _ in held:
        transport.close()


async def churn(port: int, channel: str, rate: int, count: int) -> None:
    """`count` connections, `rate` a second at most, in ticks of 10 ms; half leave at
    once, half once their poll is parked (after 20 ms). A slower machine takes longer
    rather than doing less: at most `_IN_FLIGHT` connections are open at once, so a
    client that falls behind does not open a second's worth in one burst (the server
    would refuse those past --max-connections, and their ports, closed late, would
    exhaust the loopback's ephemeral range)."""
    loop = asyncio.get_running_loop()
    request = _poll(port, channel)
    opened = failed = 0
    reasons: dict[str, int] = {}
    pending: set[asyncio.Task[None]] = set()

    async def cycle(linger: bool) -> None:
        nonlocal opened, failed
        try:
            transport, _ = await loop.create_connection(lambda: _Client(request), "127.0.0.1", port)
        except OSError as exc:
            failed += 1
            reason = exc.strerror or type(exc).__name__
            reasons[reason] = reasons.get(reason, 0) + 1
            return
        opened += 1
        if linger:
            await asyncio.sleep(0.02)
        transport.close()

    started = time.monotonic()
    tick = 0
    while tick < count:
        due = min(int((time.monotonic() - started) * rate), count) - tick
        due = min(due, _IN_FLIGHT - len(pending))
        for n in range(due):
            task = asyncio.ensure_future(cycle(linger=(tick + n) % 2 == 1))
            pending.add(task)
            task.add_done_callback(pending.discard)
        tick += due
        await asyncio.sleep(0.01)
    if pending:
        await asyncio.wait(pending)
    print("churned", opened, failed, f"{time.monotonic() - started:.1f}", flush=True)
    if reasons:
        print("failures:", reasons, file=sys.stderr, flush=True)


def main() -> None:
    command, port, channel, *rest = sys.argv[1:]
    if command == "hold":
        uvloop.run(hold(int(port), channel, int(rest[0])))
    else:
        uvloop.run(churn(int(port), channel, int(rest[0]), int(rest[1])))


if __name__ == "__main__":
    main()

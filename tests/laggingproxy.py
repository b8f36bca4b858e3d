"""A TCP proxy on loopback that hands the server's bytes to the client a fixed time late
(in order), so a client sees the world as it was a moment ago: a node of a cluster
that lags behind the others, on demand, without depending on the machine's load."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from asyncio import StreamReader, StreamWriter
from collections.abc import Iterator

from tests.proxies import free_port


class LaggingProxy:
    """Listens on its own port and forwards to `target_port`; what comes back is held
    `lag_s` seconds. Runs its own event loop on a thread."""

    def __init__(self, target_port: int, lag_s: float) -> None:
        self.port = free_port()
        self._target_port = target_port
        self._lag_s = lag_s
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._connections: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the lagging proxy did not start")

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self._ready.set()
        await self._stopping.wait()
        server.close()
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, client_in: StreamReader, client_out: StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            server_in, server_out = await asyncio.open_connection("127.0.0.1", self._target_port)
        except OSError:
            client_out.close()
            return
        try:
            await asyncio.gather(
                self._pipe(client_in, server_out, lag_s=0.0),
                self._pipe(server_in, client_out, lag_s=self._lag_s),
            )
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            client_out.close()
            server_out.close()

    @staticmethod
    async def _pipe(source: StreamReader, sink: StreamWriter, lag_s: float) -> None:
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await held.get()
                if not chunk:
                    break
                await asyncio.sleep(max(0.0, due - loop.time()))
                sink.write(chunk)
                await sink.drain()

        sender = asyncio.create_task(deliver())
        try:
            while chunk := await source.read(65536):
                held.put_nowait((loop.time() + lag_s, chunk))
            held.put_nowait((loop.time() + lag_s, b""))
            await sender
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)


@contextlib.contextmanager
def lagging(target_port: int, lag_s: float) -> Iterator[LaggingProxy]:
    proxy = LaggingProxy(target_port, lag_s)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()

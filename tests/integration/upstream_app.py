"""A small web app for the reverse-proxy tests, run in its own process:
`python -m tests.integration.upstream_app --fd N` serves on an inherited listening socket.

It reports what it received (method, target, headers, body, which connection) and can
answer slowly, in gated chunks, or never, so the tests can watch PushUp in between. It
has a WebSocket of its own (`/ws`), to be reached through PushUp.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import socket
from collections import defaultdict
from typing import Any

from aiohttp import WSMsgType, web

# Per test token: body bytes received so far, releases of a gated stream.
progress: defaultdict[str, int] = defaultdict(int)
gates: defaultdict[str, asyncio.Queue[None]] = defaultdict(asyncio.Queue)
seen: list[str] = []  # every request target, in order
hanging = 0


def _peer_port(request: web.Request) -> int:
    assert request.transport is not None
    port: int = request.transport.get_extra_info("peername")[1]
    return port


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    payload: dict[str, Any] = {
        "method": request.method,
        "target": request.raw_path,
        "headers": [[name.decode(), value.decode()] for name, value in request.raw_headers],
        "body": body.decode("latin-1"),
        "version": f"{request.version.major}.{request.version.minor}",
        "port": _peer_port(request),
    }
    return web.json_response(payload, headers={"X-Upstream": "echo"})


async def cookies(request: web.Request) -> web.Response:
    response = web.Response(
        status=int(request.query.get("status", "200")),
        text="cookies",
        headers={"X-Upstream": "cookies"},
    )
    response.headers.add("Set-Cookie", "a=1; Path=/")
    response.headers.add("Set-Cookie", "b=2; Path=/; HttpOnly")
    response.headers.add("X-Multi", "one")
    response.headers.add("X-Multi", "two")
    return response


async def status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    return web.Response(status=code, headers={"X-Upstream": "status", "ETag": '"v1"'})


async def upload(request: web.Request) -> web.Response:
    token = request.query["token"]
    digest = hashlib.sha256()
    async for data in request.content.iter_any():
        digest.update(data)
        progress[token] += len(data)
    return web.json_response({"size": progress[token], "sha256": digest.hexdigest()})


async def early(request: web.Request) -> web.Response:
    """Refuses the body without reading it, as an app enforcing its own size limit."""
    return web.json_response({"error": "too large"}, status=413)


async def read_progress(request: web.Request) -> web.Response:
    return web.json_response({"received": progress[request.query["token"]]})


async def stream(request: web.Request) -> web.StreamResponse:
    """`n` events, each after one release of the token's gate; `die=1` drops the
    connection after the first one."""
    token = request.query["token"]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for index in range(int(request.query.get("n", "3"))):
        if index:
            await gates[token].get()
            if request.query.get("die"):
                assert request.transport is not None
                request.transport.abort()
                return response
        await response.write(f"data: {index}\n\n".encode())
    await response.write_eof()
    return response


def pattern(size: int) -> bytes:
    """`size` bytes that tell their position apart."""
    block = bytes(range(251)) * 261  # 65,511 bytes: no 64 KiB boundary lines up with it
    return (block * (size // len(block) + 1))[:size]


async def big(request: web.Request) -> web.StreamResponse:
    """A large body without a length, written as fast as the reader takes it."""
    data = pattern(int(request.query["size"]))
    response = web.StreamResponse()
    await response.prepare(request)
    for start in range(0, len(data), 64 * 1024):
        await response.write(data[start : start + 64 * 1024])
    await response.write_eof()
    return response


async def release(request: web.Request) -> web.Response:
    gates[request.query["token"]].put_nowait(None)
    return web.json_response({})


async def hang(request: web.Request) -> web.Response:
    global hanging
    hanging += 1
    try:
        await asyncio.Event().wait()
    finally:
        hanging -= 1
    raise AssertionError("unreachable")


async def state(request: web.Request) -> web.Response:
    return web.json_response({"hanging": hanging, "seen": seen})


async def conn(request: web.Request) -> web.Response:
    return web.json_response({"port": _peer_port(request)})


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """Echoes every message, text or binary. Text commands: `handshake` answers what
    reached the app; `close` closes from the app's side (code 4000); `flood T N`
    sends N binary messages of 1 MiB, each counted in progress[T] once written (the
    writer waits while the socket is full)."""
    ws = web.WebSocketResponse(max_msg_size=8 * 1024 * 1024)
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)
        elif message.type != WSMsgType.TEXT:
            break
        elif message.data == "handshake":
            headers = [[name.decode(), value.decode()] for name, value in request.raw_headers]
            await ws.send_json({"target": request.raw_path, "headers": headers})
        elif message.data == "close":
            await ws.close(code=4000, message=b"the app is done")
        elif message.data.startswith("flood "):
            _, token, count = message.data.split()
            for _ in range(int(count)):
                await ws.send_bytes(pattern(1024 * 1024))
                progress[token] += 1
        else:
            await ws.send_str(message.data)
    return ws


@web.middleware
async def record(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path != "/state":
        seen.append(request.raw_path)
    response: web.StreamResponse = await handler(request)
    return response


def build() -> web.Application:
    app = web.Application(middlewares=[record])
    app.router.add_route("*", "/", echo)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    app.router.add_route("*", "/channelsX", echo)
    app.router.add_get("/cookies", cookies)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_route("*", "/upload", upload)
    app.router.add_get("/progress", read_progress)
    app.router.add_post("/early", early)
    app.router.add_get("/stream", stream)
    app.router.add_get("/release", release)
    app.router.add_get("/big", big)
    app.router.add_get("/hang", hang)
    app.router.add_get("/state", state)
    app.router.add_get("/conn", conn)
    app.router.add_get("/ws", websocket)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args()
    sock = socket.socket(fileno=args.fd)
    # Handlers stop when PushUp drops their connection, as the tests check.
    web.run_app(
        build(),
        sock=sock,
        print=None,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=1.0,
    )


if __name__ == "__main__":
    main()

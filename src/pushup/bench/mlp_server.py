"""The paper's MLP baseline: thread-per-request long polling, stdlib only.

Section 4 of the paper compares PushUp (event-driven long polling, ELP) with
"multithreaded long polling" (MLP), where every polling request gets a thread that
waits for the next update. This module is that baseline, built the ordinary way with
`http.server.ThreadingHTTPServer`: one thread per connection (so one per parked poll),
parked on a `threading.Condition` per channel until a message or the poll's timeout.
It speaks the subset of PushUp's API that the benchmark uses, with the same JSON, so
the same client bytes drive both. It is meant to be honest, not tuned: no artificial
delays, and nothing beyond a normal thread-per-request design. Like any such server, a
parked thread does not notice its client leaving until it answers (at the latest when
the poll times out), and one publication wakes every thread waiting on the channel.

    python -m pushup.bench.mlp_server --fd N     # a listening socket from the parent
    python -m pushup.bench.mlp_server --port P   # or bind one itself
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 1 << 20


class ApiError(Exception):
    """An error answer: status, machine code, human sentence, extra fields."""

    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.body: dict[str, Any] = {"error": code, "detail": detail, **extra}


@dataclass
class Channel:
    """A channel: its cached messages and the threads waiting on it."""

    id: int
    ttl_s: float
    expires_at: float
    max_messages: int
    # (message id, publication time, the message's JSON as sent to this channel)
    messages: deque[tuple[int, float, str]] = field(init=False)
    cond: threading.Condition = field(default_factory=threading.Condition)
    waiting: int = 0
    last_message_id: int | None = None

    def __post_init__(self) -> None:
        self.messages = deque(maxlen=self.max_messages)

    def prune(self, now: float, message_ttl_s: float) -> None:
        """Drop messages older than the TTL (caller holds `cond`)."""
        while self.messages and self.messages[0][1] <= now - message_ttl_s:
            self.messages.popleft()

    def after(self, since: int | None) -> list[tuple[int, str]]:
        """Cached (id, JSON) newer than `since`, oldest first (caller holds `cond`)."""
        if since is None:
            return [(message_id, fragment) for message_id, _, fragment in self.messages]
        newer: list[tuple[int, str]] = []
        for message_id, _, fragment in reversed(self.messages):
            if message_id <= since:
                break
            newer.append((message_id, fragment))
        newer.reverse()
        return newer


class Store:
    """Every channel, and the global message id counter."""

    def __init__(self, message_ttl_s: float, max_messages: int, channel_ttl_s: float) -> None:
        self.message_ttl_s = message_ttl_s
        self.max_messages = max_messages
        self.channel_ttl_s = channel_ttl_s
        self._lock = threading.Lock()
        self._channels: dict[int, Channel] = {}
        self._last_channel_id = 0
        self._last_message_id = 0

    def create(self, ttl_s: float | None) -> Channel:
        ttl = self.channel_ttl_s if ttl_s is None else ttl_s
        with self._lock:
            self._last_channel_id += 1
            channel = Channel(self._last_channel_id, ttl, time.time() + ttl, self.max_messages)
            self._channels[channel.id] = channel
        return channel

    def get(self, ref: object) -> Channel | None:
        """A live channel by id (an int or a string of digits); expired ones are dropped."""
        if isinstance(ref, bool):
            return None
        if isinstance(ref, str) and ref.isascii() and ref.isdigit():
            ref = int(ref)
        if not isinstance(ref, int):
            return None
        with self._lock:
            channel = self._channels.get(ref)
            if channel is not None and channel.expires_at <= time.time():
                del self._channels[ref]
                channel = None
            return channel

    def last_message_id(self) -> int:
        with self._lock:
            return self._last_message_id

    def publish(self, channels: list[Channel], data: Any) -> tuple[int, float]:
        """Cache one message in every channel and wake their waiting threads."""
        data_json = json.dumps(data, separators=(",", ":"))
        with contextlib.ExitStack() as stack:
            # Lock the channels in id order, then take the id: each channel's cache stays
            # in id order, and a poller holding a channel's lock knows every later message
            # to it gets a larger id than the counter it reads.
            for channel in sorted(channels, key=lambda c: c.id):
                stack.enter_context(channel.cond)
            now = time.time()
            with self._lock:
                self._last_message_id += 1
                message_id = self._last_message_id
            for channel in channels:
                fragment = (
                    f'{{"id":"{message_id}","time":{now!r},"channels":[{channel.id}],'
                    f'"data":{data_json}}}'
                )
                channel.prune(now, self.message_ttl_s)
                channel.messages.append((message_id, now, fragment))
                channel.last_message_id = message_id
                channel.expires_at = now + channel.ttl_s
                channel.cond.notify_all()
        return message_id, now

    def wait(self, channel: Channel, since: int | None, timeout_s: float) -> tuple[list[str], int]:
        """Messages after `since`, parking this thread up to `timeout_s` for one."""
        deadline = time.monotonic() + timeout_s
        with channel.cond:
            channel.prune(time.time(), self.message_ttl_s)
            found = channel.after(since)
            if not found and timeout_s > 0:
                channel.waiting += 1
                try:
                    while not found:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        channel.cond.wait(remaining)
                        found = channel.after(since)
                finally:
                    channel.waiting -= 1
            # Empty: every later message to this channel gets an id above the counter.
            cursor = found[-1][0] if found else max(since or 0, self.last_message_id())
        return [fragment for _, fragment in found], cursor


class MlpServer(ThreadingHTTPServer):
    """A thread per connection; a connection's thread also serves its parked poll."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 4096

    def __init__(
        self, address: tuple[str, int], store: Store, max_timeout_s: float, *, bind: bool = True
    ) -> None:
        self.store = store
        self.max_timeout_s = max_timeout_s
        super().__init__(address, Handler, bind_and_activate=bind)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # One line per failure (a thread that could not start, a reset connection).
        exc = sys.exc_info()[1]
        print(f"mlp_server: error with {client_address}: {exc!r}", file=sys.stderr, flush=True)


def _json(body: Any) -> bytes:
    return b"" if body is None else json.dumps(body, separators=(",", ":")).encode()


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, "invalid_" + name, f"{name} must be a number")
    return float(value)


class Handler(BaseHTTPRequestHandler):
    """The API subset: channels, publish, subscribe, health."""

    server: MlpServer
    protocol_version = "HTTP/1.1"
    server_version = "mlp-baseline"
    sys_version = ""
    timeout = 75.0  # seconds an idle keep-alive connection keeps its thread
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Malformed requests caught by http.server itself: answer in JSON too.
        self.close_connection = True
        status = HTTPStatus(code)
        self._send(code, {"error": status.name.lower(), "detail": message or status.phrase})

    def _send(self, status: int, body: Any = None, raw: bytes | None = None) -> None:
        payload = raw if raw is not None else _json(body)
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"Server: {self.server_version}\r\nDate: {self.date_time_string()}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        )
        if self.close_connection:
            head += "Connection: close\r\n"
        # Head and body in one write: one segment, no Nagle/delayed-ACK stall.
        self.wfile.write(head.encode("latin-1") + b"\r\n" + payload)

    def _body(self) -> Any:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ApiError(411, "length_required", "send the body with a Content-Length")
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "bad_request", "invalid Content-Length") from None
        if length < 0:
            self.close_connection = True
            raise ApiError(400, "bad_request", "invalid Content-Length")
        if length > MAX_BODY:
            self.close_connection = True
            raise ApiError(413, "body_too_large", "the body is over 1 MiB")
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "invalid_json", "the body is not valid JSON") from None

    def _dispatch(self, method: str) -> None:
        try:
            status, body, raw = self._route(method)
        except ApiError as exc:
            status, body, raw = exc.status, exc.body, None
        self._send(status, body, raw)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _route(self, method: str) -> tuple[int, Any, bytes | None]:
        url = urlsplit(self.path)
        path = url.path
        if path == "/health":
            allowed = "GET"
        elif path in ("/channels", "/publish"):
            allowed = "POST"
        elif path == "/subscribe" or (path.startswith("/channels/") and path.count("/") == 2):
            allowed = "GET"
        else:
            raise ApiError(404, "not_found", f"no such path: {path}")
        if method != allowed:
            raise ApiError(405, "method_not_allowed", f"{path} takes {allowed}")
        if path == "/subscribe":
            return self._subscribe(url.query)
        if path == "/publish":
            return self._publish()
        if path == "/channels":
            return self._create()
        if path == "/health":
            return 200, {"status": "ok"}, None
        return self._info(path.rsplit("/", 1)[1])

    def _create(self) -> tuple[int, Any, None]:
        body = self._body()
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_body", "the body must be a JSON object")
        ttl = body.get("ttl")
        if ttl is not None and _number(ttl, "ttl") <= 0:
            raise ApiError(400, "invalid_ttl", "ttl must be a number > 0")
        channel = self.server.store.create(None if ttl is None else float(ttl))
        return 201, {"id": channel.id, "name": None, "expires_at": channel.expires_at}, None

    def _info(self, ref: str) -> tuple[int, Any, None]:
        channel = self.server.store.get(ref)
        if channel is None:
            raise ApiError(404, "channel_not_found", f"no channel {ref}", channels=[ref])
        with channel.cond:
            channel.prune(time.time(), self.server.store.message_ttl_s)
            info = {
                "id": channel.id,
                "name": None,
                "expires_at": channel.expires_at,
                "subscribers": channel.waiting,
                "messages": len(channel.messages),
                "last_message_id": (
                    None if channel.last_message_id is None else str(channel.last_message_id)
                ),
            }
        return 200, info, None

    def _publish(self) -> tuple[int, Any, None]:
        body = self._body()
        if not isinstance(body, dict) or "data" not in body:
            raise ApiError(400, "invalid_body", 'the body must be {"channels": [...], "data": ...}')
        refs = body.get("channels")
        if not isinstance(refs, list) or not refs or len(refs) > 100:
            raise ApiError(400, "invalid_channels", "channels must be a list of 1 to 100 ids")
        channels: list[Channel] = []
        unknown: list[object] = []
        for ref in refs:
            channel = self.server.store.get(ref)
            if channel is None:
                unknown.append(ref)
            elif channel not in channels:
                channels.append(channel)
        if unknown:
            raise ApiError(404, "channel_not_found", "unknown channels", channels=unknown)
        message_id, now = self.server.store.publish(channels, body["data"])
        ids = [channel.id for channel in channels]
        return 201, {"id": str(message_id), "time": now, "channels": ids}, None

    def _subscribe(self, query: str) -> tuple[int, None, bytes]:
        params = parse_qs(query, keep_blank_values=True)
        refs = params.get("channels", [""])[-1]
        if not refs or "," in refs:
            raise ApiError(400, "invalid_channels", "give exactly one channel (this baseline)")
        try:
            timeout = float(params.get("timeout", ["50"])[-1])
        except ValueError:
            raise ApiError(400, "invalid_timeout", "timeout must be a number") from None
        if not 0 <= timeout <= self.server.max_timeout_s:
            raise ApiError(400, "invalid_timeout", "timeout is out of range")
        since: int | None = None
        if "since" in params:
            text = params["since"][-1]
            if not (text.isascii() and text.isdigit()):
                raise ApiError(400, "invalid_since", "since must be a cursor from a response")
            since = int(text)
        channel = self.server.store.get(refs)
        if channel is None:
            raise ApiError(404, "channel_not_found", f"no channel {refs}", channels=[refs])
        found, cursor = self.server.store.wait(channel, since, timeout)
        body = f'{{"messages":[{",".join(found)}],"cursor":"{cursor}","gap":false}}'
        return 200, None, body.encode()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pushup.bench.mlp_server", description=__doc__)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--fd", type=int, help="serve on this already listening socket")
    where.add_argument("--port", type=int, default=7071, help="bind this port (default 7071)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--message-ttl", type=float, default=300.0)
    parser.add_argument("--max-messages", type=int, default=1000)
    parser.add_argument("--channel-ttl", type=float, default=3600.0)
    parser.add_argument("--max-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    store = Store(args.message_ttl, args.max_messages, args.channel_ttl)
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
        host, port = sock.getsockname()[:2]
        server = MlpServer((host, port), store, args.max_timeout, bind=False)
        server.socket.close()
        server.socket = sock
        server.server_address = (host, port)
        server.server_name, server.server_port = host, port
    else:
        server = MlpServer((args.host, args.port), store, args.max_timeout)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()

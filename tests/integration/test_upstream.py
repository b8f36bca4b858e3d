"""Reverse-proxy mode (`pushup serve --upstream URL`) against a real web app process.

PushUp answers its own paths and passes everything else on, streaming both ways; the
app (tests/integration/upstream_app.py) reports what reached it and can answer in
gated chunks or never. Raw sockets where the bytes on the wire matter, httpx elsewhere.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.sync.client import ClientConnection, connect

from tests.helpers import ServerProcess, start_server, wait_for
from tests.integration.upstream_app import pattern

ServerFactory = Callable[..., ServerProcess]

KiB = 1024
MiB = 1024 * KiB
KEY = "s3cret-key"

_tokens = itertools.count()


def token() -> str:
    return f"t{os.getpid()}-{next(_tokens)}"


# -- the app behind PushUp -----------------------------------------------------------


@dataclass
class App:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, target: str) -> Any:
        """Ask the app directly, not through PushUp."""
        return httpx.get(self.url + target, timeout=10.0).json()

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()


@pytest.fixture(scope="module")
def app() -> Iterator[App]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    with tempfile.NamedTemporaryFile(prefix="upstream-", suffix=".log", delete=False) as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.upstream_app", "--fd", str(sock.fileno())],
            pass_fds=[sock.fileno()],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    port = sock.getsockname()[1]
    sock.close()
    upstream = App(proc, port, log.name)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the app exited:\n{upstream.log()}")
        try:
            return httpx.get(f"{upstream.url}/state", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, timeout=15.0, what="the upstream app")
    yield upstream
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert "Traceback" not in upstream.log(), upstream.log()
    os.unlink(log.name)


@pytest.fixture(scope="module")
def proxy(app: App) -> Iterator[ServerProcess]:
    """PushUp in front of the app, without a publisher key."""
    server = start_server("--upstream", app.url)
    yield server
    server.stop()
    assert "Traceback" not in server.log(), server.log()


@pytest.fixture(scope="module")
def api(proxy: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy.url, timeout=10.0) as client:
        yield client


# -- the wire ------------------------------------------------------------------------


@dataclass
class Head:
    status: int
    headers: list[tuple[str, str]]  # names lower-cased, in order

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    def get(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, (name, self.headers)
        return values[0] if values else None


class Wire:
    """One raw client connection that reads heads, chunks and bodies separately."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buffer = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    def _more(self) -> None:
        self.sock.settimeout(self.timeout)
        data = self.sock.recv(256 * KiB)
        if not data:
            raise ConnectionError(f"closed by the server; unread {bytes(self.buffer)!r}")
        self.buffer += data

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._more()
        end = self.buffer.index(marker) + len(marker)
        data = bytes(self.buffer[:end])
        del self.buffer[:end]
        return data

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._more()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def head(self) -> Head:
        while True:
            status_line, *lines = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")[:-2]
            version, status, _ = status_line.split(" ", 2)
            assert version == "HTTP/1.1", status_line
            headers = []
            for line in lines:
                name, _, value = line.partition(":")
                headers.append((name.lower(), value.strip()))
            if int(status) != 100:
                return Head(int(status), headers)

    def chunk(self) -> bytes:
        """One chunk of a chunked body; b"" for the last one (trailers skipped)."""
        size = int(self._until(b"\r\n")[:-2], 16)
        if size == 0:
            self._until(b"\r\n")
            return b""
        data = self._take(size)
        assert self._take(2) == b"\r\n"
        return data

    def body(self, head: Head, method: str = "GET") -> bytes:
        if method == "HEAD" or head.status in (204, 304):
            return b""
        length = head.get("content-length")
        if length is not None:
            return self._take(int(length))
        assert head.get("transfer-encoding") == "chunked", head.headers
        return b"".join(iter(self.chunk, b""))

    def response(self, method: str = "GET") -> tuple[Head, bytes]:
        head = self.head()
        return head, self.body(head, method)

    def nothing_yet(self, wait: float = 0.3) -> None:
        """No byte arrives for a little while (a check that something waits)."""
        assert not self.buffer, bytes(self.buffer)
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(64 * KiB)
        except TimeoutError:
            return
        raise AssertionError(f"expected nothing yet, got {data!r}")

    def closed(self) -> bool:
        """The server closes the connection, with nothing more first."""
        assert not self.buffer, bytes(self.buffer)
        self.sock.settimeout(self.timeout)
        return self.sock.recv(64 * KiB) == b""


@pytest.fixture
def wire() -> Iterator[Callable[[ServerProcess], Wire]]:
    opened: list[Wire] = []

    def connect(server: ServerProcess) -> Wire:
        opened.append(Wire(server.port))
        return opened[-1]

    yield connect
    for each in opened:
        each.close()


def raw(
    method: str,
    target: str,
    *headers: tuple[str, str],
    body: bytes | None = None,
    version: str = "HTTP/1.1",
) -> bytes:
    lines = [f"{method} {target} {version}", "Host: app.test"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join([*lines, "", ""]).encode("latin-1") + (body or b"")


def echoed_headers(payload: dict[str, Any]) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in payload["headers"]:
        headers.setdefault(name.lower(), []).append(value)
    return headers


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    assert payload["error"] == code, payload
    assert payload["detail"], payload


# -- what is passed on ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH"])
def test_method_target_headers_and_body_reach_the_app(api: httpx.Client, method: str) -> None:
    body = f"a {method} body".encode() if method != "GET" else b""
    response = api.request(
        method,
        "/echo/a%20b/c?x=1&y=%2F&x=2",
        content=body or None,
        headers={"X-Custom": "value", "Content-Type": "text/plain", "Cookie": "sid=abc"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-upstream"] == "echo"
    echoed = response.json()
    assert echoed["method"] == method
    assert echoed["target"] == "/echo/a%20b/c?x=1&y=%2F&x=2"
    assert echoed["body"] == body.decode()
    headers = echoed_headers(echoed)
    assert headers["x-custom"] == ["value"]
    assert headers["content-type"] == ["text/plain"]
    assert headers["cookie"] == ["sid=abc"]
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    # Nothing the client did not send, but for X-Forwarded-*.
    assert "user-agent" in headers  # httpx's own, passed on
    assert "x-upstream" not in headers


def test_statuses_and_repeated_response_headers_come_back(api: httpx.Client) -> None:
    response = api.get("/cookies", params={"status": 201})
    assert response.status_code == 201
    assert response.text == "cookies"
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]
    assert response.headers.get_list("x-multi") == ["one", "two"]
    assert "cache-control" not in response.headers  # PushUp's own headers stay its own
    for code in (202, 404, 418, 500, 503):
        response = api.get(f"/status/{code}")
        assert response.status_code == code
        assert response.headers["x-upstream"] == "status"
    # The cookies go nowhere else: a later request carries none of them.
    api.cookies.clear()
    assert "cookie" not in echoed_headers(api.get("/echo").json())


def test_bodiless_answers(proxy: ServerProcess, wire: Callable[[ServerProcess], Wire]) -> None:
    conn = wire(proxy)
    conn.send(raw("HEAD", "/cookies"))
    head, _ = conn.response("HEAD")
    assert head.status == 200 and head.get("content-length") == str(len("cookies"))
    for code in (204, 304):
        conn.send(raw("GET", f"/status/{code}"))
        head, _ = conn.response()
        assert head.status == code
        assert head.get("etag") == '"v1"'
        assert head.get("transfer-encoding") is None
    # Still in step: the connection serves the next request normally.
    conn.send(raw("GET", "/echo?after=1"))
    head, body = conn.response()
    assert head.status == 200 and json.loads(body)["target"] == "/echo?after=1"


def test_hop_by_hop_headers_dropped_and_forwarding_headers_set(
    proxy: ServerProcess, wire: Callable[[ServerProcess], Wire]
) -> None:
    conn = wire(proxy)
    conn.send(
        raw(
            "GET",
            "/echo",
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "dropped"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Proxy-Authorization", "Basic eA=="),
            ("Trailer", "X-Checksum"),
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "spoofed.test"),
            ("X-Multi", "one"),
            ("X-Multi", "two"),
            ("Accept", "text/html"),
        )
    )
    head, body = conn.response()
    assert head.status == 200
    headers = echoed_headers(json.loads(body))
    for name in ("connection", "x-hop", "keep-alive", "te", "proxy-authorization", "trailer"):
        assert name not in headers, (name, headers)
    assert headers["host"] == ["app.test"]
    assert headers["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == ["app.test"]
    assert headers["x-multi"] == ["one, two"]
    assert headers["accept"] == ["text/html"]
    assert "user-agent" not in headers and "accept-encoding" not in headers


def test_an_upgrade_other_than_websocket_is_not_passed_on(
    proxy: ServerProcess, wire: Callable[[ServerProcess], Wire]
) -> None:
    """The app answers in plain HTTP; what follows on the wire would be another
    protocol, so the connection closes after the answer."""
    conn = wire(proxy)
    conn.send(
        raw(
            "GET",
            "/echo?h2c",
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAAQ"),
        )
    )
    head, body = conn.response()
    assert head.status == 200 and head.get("connection") == "close"
    headers = echoed_headers(json.loads(body))
    assert "upgrade" not in headers and "connection" not in headers
    assert conn.closed()


# -- WebSocket pass-through ----------------------------------------------------------

HANDSHAKE = (
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
)


def ws_connect(server: ServerProcess, target: str) -> ClientConnection:
    return connect(
        f"ws://127.0.0.1:{server.port}{target}",
        open_timeout=10,
        close_timeout=10,
        max_size=None,
    )


def test_the_apps_websocket_works_through_pushup(server_factory: ServerFactory, app: App) -> None:
    server = server_factory("--upstream", app.url)
    with ws_connect(server, "/ws?room=1") as ws:
        ws.send("handshake")
        reached = json.loads(ws.recv(timeout=10))
        assert reached["target"] == "/ws?room=1"
        headers = echoed_headers(reached)
        assert headers["upgrade"] == ["websocket"]
        assert headers["connection"] == ["Upgrade"]
        assert headers["x-forwarded-for"] == ["127.0.0.1"]
        assert headers["x-forwarded-proto"] == ["http"]
        assert headers["x-forwarded-host"] == headers["host"] == [f"127.0.0.1:{server.port}"]
        large_text = "é" + "t" * (100 * KiB)
        large_binary = pattern(300 * KiB)
        sent: list[str | bytes] = ["hello", b"\x00\x01\xff", large_text, large_binary, "", b"b"]
        for message in sent:
            ws.send(message)
        assert [ws.recv(timeout=10) for _ in sent] == sent
        ws.close()  # from the client's side
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000
    # Both of PushUp's sockets, the client's and the app's, are closed.
    wait_for(lambda: server.connections() == 0, what="the tunnel's sockets to close")


def test_the_app_closing_its_websocket_closes_the_clients(
    server_factory: ServerFactory, app: App
) -> None:
    server = server_factory("--upstream", app.url)
    with ws_connect(server, "/ws") as ws:
        ws.send("close")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "the app is done")
    wait_for(lambda: server.connections() == 0, what="the tunnel's sockets to close")


def test_a_websocket_reader_that_stops_holds_the_app_back(
    proxy: ServerProcess, app: App, wire: Callable[[ServerProcess], Wire]
) -> None:
    """Backpressure: a client that reads nothing stops the app's writes once the
    buffers on the way are full, instead of PushUp's memory taking it all. A raw
    socket, since a WebSocket library would read ahead into a queue of its own."""
    name = token()
    count = 64  # messages of 1 MiB
    conn = wire(proxy)
    conn.send(raw("GET", "/ws", *HANDSHAKE))
    assert conn.head().status == 101
    conn.send(Frame(Opcode.TEXT, f"flood {name} {count}".encode()).serialize(mask=True))
    written: list[int] = []

    def stalled() -> bool:
        written.append(app.get(f"/progress?token={name}")["received"])
        return len(written) > 10 and written[-1] == written[-10] > 0

    wait_for(stalled, timeout=30, interval=0.05, what="the app's writes to stall")
    assert written[-1] < count // 2, f"{written[-1]} MiB written before the client read"
    # Reading goes on: all of it comes, each 1 MiB message in a frame with a
    # 10-byte header.
    data = conn._take(count * (MiB + 10))
    assert data[:10] == b"\x82\x7f" + MiB.to_bytes(8, "big")
    assert data[10 : 10 + MiB] == pattern(MiB)
    assert app.get(f"/progress?token={name}")["received"] == count


def test_a_frame_sent_with_the_handshake_reaches_the_app(
    proxy: ServerProcess, wire: Callable[[ServerProcess], Wire]
) -> None:
    """Bytes after the handshake in the same write are the WebSocket's, not lost."""
    conn = wire(proxy)
    conn.send(raw("GET", "/ws", *HANDSHAKE) + Frame(Opcode.TEXT, b"early").serialize(mask=True))
    assert conn.head().status == 101
    assert conn._take(7) == Frame(Opcode.TEXT, b"early").serialize(mask=False)


def test_pushups_own_websocket_is_still_pushups(
    proxy: ServerProcess, api: httpx.Client, app: App
) -> None:
    channel = new_channel(api)
    before = len(app.get("/state")["seen"])
    with ws_connect(proxy, f"/subscribe/ws?channels={channel}") as ws:
        wait_for(
            lambda: api.get(f"/channels/{channel}").json()["subscribers"] == 1,
            what="the WebSocket subscription",
        )
        assert api.post("/publish", json={"channels": [channel], "data": "hi"}).status_code == 201
        assert json.loads(ws.recv(timeout=10))["data"] == "hi"
    assert len(app.get("/state")["seen"]) == before, "it never reached the app"


def test_a_websocket_the_app_refuses_gets_its_answer_then_close(
    proxy: ServerProcess, wire: Callable[[ServerProcess], Wire]
) -> None:
    """/echo is no WebSocket: its plain answer comes back as it is, then the
    connection closes (what would follow on it is no longer HTTP)."""
    conn = wire(proxy)
    conn.send(raw("GET", "/echo?ws", *HANDSHAKE))
    head, body = conn.response()
    assert head.status == 200 and head.get("x-upstream") == "echo"
    headers = echoed_headers(json.loads(body))
    assert headers["upgrade"] == ["websocket"] and headers["connection"] == ["Upgrade"]
    assert conn.closed()


# -- streaming -----------------------------------------------------------------------


def test_a_large_request_body_streams_to_the_app(
    proxy: ServerProcess, app: App, wire: Callable[[ServerProcess], Wire]
) -> None:
    """4 MiB, above PushUp's own 1 MiB body limit: the app has the first part before
    the client sends the rest."""
    name = token()
    body = os.urandom(4 * MiB)
    conn = wire(proxy)
    conn.send(raw("POST", f"/upload?token={name}", ("Content-Length", str(len(body)))))
    conn.send(body[: 256 * KiB])
    wait_for(
        lambda: app.get(f"/progress?token={name}")["received"] > 0,
        what="the first part of the body at the app",
    )
    conn.send(body[256 * KiB :])
    head, answer = conn.response()
    assert head.status == 200, answer
    assert json.loads(answer) == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_a_chunked_request_body_streams_to_the_app(
    proxy: ServerProcess, app: App, wire: Callable[[ServerProcess], Wire]
) -> None:
    name = token()
    parts = [os.urandom(100 * KiB) for _ in range(5)]
    conn = wire(proxy)
    conn.send(raw("PUT", f"/upload?token={name}", ("Transfer-Encoding", "chunked")))
    conn.send(b"%x\r\n%s\r\n" % (len(parts[0]), parts[0]))
    wait_for(lambda: app.get(f"/progress?token={name}")["received"] > 0, what="the first chunk")
    for part in parts[1:]:
        conn.send(b"%x\r\n%s\r\n" % (len(part), part))
    conn.send(b"0\r\n\r\n")
    _head, answer = conn.response()
    whole = b"".join(parts)
    assert json.loads(answer) == {"size": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}


def test_an_answer_before_the_whole_body_closes_the_connection(
    proxy: ServerProcess, api: httpx.Client, wire: Callable[[ServerProcess], Wire]
) -> None:
    """The app refuses a body without reading it: its answer comes back at once, and
    the rest of the body is never read, so the connection ends after the answer."""
    conn = wire(proxy)
    conn.send(raw("POST", "/early", ("Content-Length", str(2 * MiB))))
    conn.send(b"x" * (64 * KiB))
    head, body = conn.response()
    assert head.status == 413 and json.loads(body) == {"error": "too large"}
    assert head.get("connection") == "close"
    assert conn.closed()
    for _ in range(3):  # the app's connections in the pool are still in step
        assert api.get("/echo?after").json()["target"] == "/echo?after"


def test_an_early_answer_is_read_by_a_client_still_sending(
    proxy: ServerProcess, wire: Callable[[ServerProcess], Wire]
) -> None:
    """A client that writes its whole body before it reads (urllib): PushUp goes on
    reading after the app's early answer, or the client would get a reset instead."""
    conn = wire(proxy)
    conn.send(raw("POST", "/early", ("Content-Length", str(2 * MiB))))
    conn.send(b"x" * (64 * KiB))
    head, body = conn.response()
    assert head.status == 413 and json.loads(body) == {"error": "too large"}
    assert conn.closed()  # PushUp's side: the answer is all
    for _ in range(31):  # still read: no reset
        conn.send(b"x" * (64 * KiB))


def test_a_malformed_chunked_body_is_a_400(
    proxy: ServerProcess, api: httpx.Client, app: App, wire: Callable[[ServerProcess], Wire]
) -> None:
    name = token()
    conn = wire(proxy)
    conn.send(raw("POST", f"/upload?token={name}", ("Transfer-Encoding", "chunked")))
    conn.send(b"5\r\nhello\r\n")
    wait_for(lambda: app.get(f"/progress?token={name}")["received"] == 5, what="the first chunk")
    conn.send(b"zz\r\nnot a chunk\r\n")
    head, body = conn.response()
    assert head.status == 400 and json.loads(body)["error"] == "bad_request"
    assert conn.closed()
    assert api.get("/echo?after").json()["target"] == "/echo?after"


def test_a_client_leaving_mid_upload_frees_everything(
    proxy: ServerProcess, api: httpx.Client, app: App, wire: Callable[[ServerProcess], Wire]
) -> None:
    name = token()
    conn = wire(proxy)
    conn.send(raw("POST", f"/upload?token={name}", ("Content-Length", str(MiB))))
    conn.send(b"x" * (64 * KiB))
    wait_for(lambda: app.get(f"/progress?token={name}")["received"] > 0, what="the first part")
    conn.close()
    assert api.get("/echo?after").json()["target"] == "/echo?after"
    assert api.get("/health").json() == {"status": "ok"}


def test_the_upstream_url_may_have_a_path_prefix(server_factory: ServerFactory, app: App) -> None:
    server = server_factory("--upstream", f"{app.url}/echo/")
    echoed = server.client().get("/some/page?q=1").json()
    assert echoed["target"] == "/echo/some/page?q=1"


def test_expect_100_continue_is_answered_before_the_body(
    proxy: ServerProcess, wire: Callable[[ServerProcess], Wire]
) -> None:
    conn = wire(proxy)
    conn.send(raw("POST", "/echo", ("Expect", "100-continue"), ("Content-Length", "5")))
    assert conn._until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.send(b"hello")
    _head, body = conn.response()
    echoed = json.loads(body)
    assert echoed["body"] == "hello"
    assert "expect" not in echoed_headers(echoed)


def test_a_streamed_response_arrives_chunk_by_chunk(
    proxy: ServerProcess, app: App, wire: Callable[[ServerProcess], Wire]
) -> None:
    """An upstream event stream with no length: re-chunked, each chunk flushed."""
    name = token()
    conn = wire(proxy)
    conn.send(raw("GET", f"/stream?token={name}&n=3", ("Accept", "text/event-stream")))
    head = conn.head()
    assert head.status == 200
    assert head.get("content-type") == "text/event-stream"
    assert head.get("transfer-encoding") == "chunked"
    assert conn.chunk() == b"data: 0\n\n"
    conn.nothing_yet()  # the next one is not sent before the app is told to
    app.get(f"/release?token={name}")
    assert conn.chunk() == b"data: 1\n\n"
    app.get(f"/release?token={name}")
    assert conn.chunk() == b"data: 2\n\n"
    assert conn.chunk() == b""
    conn.send(raw("GET", "/echo?next"))
    head, body = conn.response()
    assert json.loads(body)["target"] == "/echo?next"


def test_a_large_response_reaches_a_slow_reader_intact(
    proxy: ServerProcess, wire: Callable[[ServerProcess], Wire]
) -> None:
    """32 MiB, read in small pieces: PushUp waits for the client, chunk by chunk."""
    size = 32 * MiB
    conn = wire(proxy)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * KiB)
    conn.send(raw("GET", f"/big?size={size}"))
    head = conn.head()
    assert head.get("transfer-encoding") == "chunked"
    digest, received = hashlib.sha256(), 0
    for data in iter(conn.chunk, b""):
        digest.update(data)
        received += len(data)
    assert received == size
    assert digest.hexdigest() == hashlib.sha256(pattern(size)).hexdigest()


def test_an_upstream_dying_mid_response_closes_the_connection(
    proxy: ServerProcess, app: App, wire: Callable[[ServerProcess], Wire]
) -> None:
    name = token()
    conn = wire(proxy)
    conn.send(raw("GET", f"/stream?token={name}&n=3&die=1"))
    assert conn.head().status == 200
    assert conn.chunk() == b"data: 0\n\n"
    app.get(f"/release?token={name}")
    assert conn.closed(), "cut short without the last chunk, the client must see it end"


def test_an_http10_client_gets_a_stream_delimited_by_close(
    proxy: ServerProcess, app: App, wire: Callable[[ServerProcess], Wire]
) -> None:
    name = token()
    conn = wire(proxy)
    conn.send(
        raw("GET", f"/stream?token={name}&n=2", ("Connection", "keep-alive"), version="HTTP/1.0")
    )
    head = conn.head()
    assert head.get("transfer-encoding") is None and head.get("connection") == "close"
    assert conn._take(len(b"data: 0\n\n")) == b"data: 0\n\n"
    app.get(f"/release?token={name}")
    assert conn._take(len(b"data: 1\n\n")) == b"data: 1\n\n"
    assert conn.closed()


# -- PushUp's own paths, and order -----------------------------------------------------


def new_channel(api: httpx.Client, **headers: str) -> int:
    response = api.post("/channels", json={}, headers=headers)
    assert response.status_code == 201, response.text
    channel: int = response.json()["id"]
    return channel


def test_pushup_paths_are_answered_by_pushup(api: httpx.Client, app: App) -> None:
    before = len(app.get("/state")["seen"])
    channel = new_channel(api)
    response = api.get("/subscribe", params={"channels": channel, "timeout": 0})
    assert response.status_code == 200 and response.json()["messages"] == []
    assert api.get("/health").json() == {"status": "ok"}
    assert_error(api.get("/subscribe/unknown"), 404, "not_found")
    assert_error(api.get("/%73ubscribe", params={"channels": "nope"}), 404, "channel_not_found")
    assert_error(api.get("/health/more"), 404, "not_found")
    assert len(app.get("/state")["seen"]) == before, "none of them reached the app"
    # A path that merely starts like one of PushUp's is the app's; and `/` is the app's
    # page, not PushUp's start page.
    assert api.get("/channelsX").json()["target"] == "/channelsX"
    assert api.get("/", params={"q": "1"}).json()["target"] == "/?q=1"
    assert api.get("/healthz").status_code == 404  # the app's 404, not PushUp's JSON
    assert "application/json" not in api.get("/healthz").headers["content-type"]


def test_pipelined_requests_are_answered_in_order(
    proxy: ServerProcess, api: httpx.Client, app: App, wire: Callable[[ServerProcess], Wire]
) -> None:
    channel = new_channel(api)
    name = token()
    conn = wire(proxy)
    conn.send(
        raw("GET", "/echo?first")
        + raw("GET", f"/stream?token={name}&n=2")
        + raw("GET", "/health")
        + raw("POST", "/echo?fourth", body=b"4")
        + raw("GET", f"/subscribe?channels={channel}&timeout=0")
    )
    assert json.loads(conn.response()[1])["target"] == "/echo?first"
    assert conn.head().status == 200
    assert conn.chunk() == b"data: 0\n\n"
    conn.nothing_yet()  # /health waits for the stream before it, though PushUp's own
    app.get(f"/release?token={name}")
    assert conn.chunk() == b"data: 1\n\n"
    assert conn.chunk() == b""
    assert json.loads(conn.response()[1]) == {"status": "ok"}
    assert json.loads(conn.response()[1])["body"] == "4"
    assert json.loads(conn.response()[1])["messages"] == []


# -- publisher paths -----------------------------------------------------------------


def test_without_a_key_publishing_stays_loopback_only(api: httpx.Client, app: App) -> None:
    before = len(app.get("/state")["seen"])
    channel = new_channel(api)  # the web app, on this host, publishing directly
    published = api.post("/publish", json={"channels": [channel], "data": 1})
    assert published.status_code == 201
    # Through another proxy: refused by PushUp, never passed on to the app either.
    proxied = {"X-Forwarded-For": "198.51.100.1"}
    assert_error(api.post("/channels", json={}, headers=proxied), 403, "forbidden")
    assert_error(
        api.post("/publish", json={"channels": [channel], "data": 1}, headers=proxied),
        403,
        "forbidden",
    )
    assert_error(api.get(f"/channels/{channel}", headers=proxied), 403, "forbidden")
    assert_error(api.post("/%70ublish", json={}, headers=proxied), 403, "forbidden")
    assert len(app.get("/state")["seen"]) == before


def test_with_a_key_publishing_needs_it(server_factory: ServerFactory, app: App) -> None:
    server = server_factory("--upstream", app.url, "--publisher-key", KEY)
    api = server.client()
    before = len(app.get("/state")["seen"])
    assert_error(api.post("/channels", json={}), 401, "unauthorized")
    proxied = {"X-Forwarded-For": "198.51.100.1"}
    channel = new_channel(api, Authorization=f"Bearer {KEY}", **proxied)
    response = api.post(
        "/publish",
        json={"channels": [channel], "data": 1},
        headers={"Authorization": f"Bearer {KEY}", **proxied},
    )
    assert response.status_code == 201
    assert len(app.get("/state")["seen"]) == before
    assert api.get("/echo").json()["target"] == "/echo"


# -- failures ------------------------------------------------------------------------


def test_a_dead_upstream_is_a_502(
    server_factory: ServerFactory, wire: Callable[[ServerProcess], Wire]
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = server_factory("--upstream", f"http://127.0.0.1:{port}")
    api = server.client()
    assert_error(api.get("/anything"), 502, "bad_gateway")
    assert_error(api.post("/form", content=b"x" * 100_000), 502, "bad_gateway")
    assert api.get("/health").json() == {"status": "ok"}
    conn = wire(server)  # a WebSocket handshake: the same, then the connection closes
    conn.send(raw("GET", "/ws", *HANDSHAKE))
    head, body = conn.response()
    assert head.status == 502 and json.loads(body)["error"] == "bad_gateway"
    assert conn.closed()


def test_a_slow_upstream_is_a_504(
    server_factory: ServerFactory, app: App, wire: Callable[[ServerProcess], Wire]
) -> None:
    server = server_factory("--upstream", app.url, "--upstream-timeout", "0.3")
    api = server.client()
    assert_error(api.get("/hang"), 504, "gateway_timeout")
    wait_for(lambda: app.get("/state")["hanging"] == 0, what="the app to see the request end")
    assert api.get("/echo").status_code == 200
    conn = wire(server)  # a WebSocket handshake: the same, then the connection closes
    conn.send(raw("GET", "/hang", *HANDSHAKE))
    head, body = conn.response()
    assert head.status == 504 and json.loads(body)["error"] == "gateway_timeout"
    assert conn.closed()
    wait_for(lambda: app.get("/state")["hanging"] == 0, what="the app to see it end")


def test_a_hanging_upstream_does_not_delay_polls_or_publications(
    proxy: ServerProcess, api: httpx.Client, app: App, wire: Callable[[ServerProcess], Wire]
) -> None:
    hung = wire(proxy)
    hung.send(raw("GET", "/hang"))
    wait_for(lambda: app.get("/state")["hanging"] >= 1, what="the request to hang at the app")
    channel = new_channel(api)
    poller = wire(proxy)
    poller.send(raw("GET", f"/subscribe?channels={channel}&timeout=30"))
    wait_for(
        lambda: api.get(f"/channels/{channel}").json()["subscribers"] == 1, what="the poll parked"
    )
    started = time.monotonic()
    assert api.post("/publish", json={"channels": [channel], "data": "hi"}).status_code == 201
    _head, body = poller.response()
    assert [m["data"] for m in json.loads(body)["messages"]] == ["hi"]
    assert time.monotonic() - started < 10
    hung.nothing_yet(0.05)  # still waiting on the app
    hung.close()
    wait_for(lambda: app.get("/state")["hanging"] == 0, what="the hung request to be dropped")


def test_upstream_connections_are_pooled(server_factory: ServerFactory, app: App) -> None:
    server = server_factory("--upstream", app.url)
    ports = set()
    for _ in range(5):
        with httpx.Client(base_url=server.url, timeout=10.0) as client:  # new client each
            ports.add(client.get("/conn").json()["port"])
    assert len(ports) == 1, f"{len(ports)} upstream connections for 5 requests in a row"


def test_a_bad_upstream_url_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pushup", "serve", "--upstream", "ftp://example.test"],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"upstream must be http://host:port" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "pushup", "serve"],
        env={**os.environ, "PUSHUP_UPSTREAM": "http://"},
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"PUSHUP_UPSTREAM must be http://host:port" in result.stderr

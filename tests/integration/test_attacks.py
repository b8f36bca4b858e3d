"""Hostile clients against a real server: slowloris, a connection flood past
`--max-connections`, and subscribers churning while a publisher hammers.

Each attack runs next to well-behaved clients, which must keep being served: polls
answered, publications delivered, every message to every stable subscriber exactly once
and in order. Bounds on time are generous ceilings (a starved server misses them by
seconds), never comparisons of speed. Tests of a limit whose flag this server lacks
(`pushup serve --help`) are skipped, or run without that part.
"""

from __future__ import annotations

import contextlib
import functools
import json
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ServerProcess, wait_for

ServerFactory = Callable[..., ServerProcess]
Json = dict[str, Any]

# An answer that should come at once, under attack, comes within this (normally a few
# milliseconds): a server starved by the attack misses it by far.
PROMPT_S = 2.0

pytestmark = pytest.mark.timeout(60)


@functools.cache
def _serve_help() -> str:
    return subprocess.run(
        [sys.executable, "-m", "pushup", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def has_flag(flag: str) -> bool:
    return flag in _serve_help()


def rss_bytes(pid: int) -> int:
    """The process's resident memory, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def create_channel(client: httpx.Client) -> int:
    response = client.post("/channels", json={})
    assert response.status_code == 201, response.text
    channel: int = response.json()["id"]
    return channel


def subscribers(client: httpx.Client, channel: int) -> int:
    response = client.get(f"/channels/{channel}")
    assert response.status_code == 200, response.text
    count: int = response.json()["subscribers"]
    return count


def request_bytes(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def read_answer(sock: socket.socket, timeout: float) -> RawAnswer | None:
    """One response with a Content-Length body, or None if the connection closed first."""
    deadline = time.monotonic() + timeout
    data = bytearray()

    def more() -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no complete answer within {timeout}s: {bytes(data)!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return False
        data.extend(chunk)
        return bool(chunk)

    while b"\r\n\r\n" not in data:
        if not more():
            return None
    head = bytes(data).partition(b"\r\n\r\n")[0]
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    size = int(headers.get("content-length", "0"))
    while len(data) - len(head) - 4 < size:
        if not more():
            return None
    body = bytes(data)[len(head) + 4 : len(head) + 4 + size]
    return RawAnswer(int(status_line.split(" ", 2)[1]), headers, body)


# -- slowloris ---------------------------------------------------------------------------

SLOW_CONNECTIONS = 300
HEADER_TIMEOUT_S = 3
# The start of a request whose head never ends: one more header byte at each tick.
_SLOW_HEAD = b"GET /subscribe?channels=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


class Slowloris:
    """Connections that send their request head one byte at a time, forever; a thread
    trickles the bytes and notes which connections the server closed and what it said."""

    def __init__(self, port: int, count: int, tick_s: float = 0.1) -> None:
        self.tick_s = tick_s
        self.open: list[socket.socket] = []
        self.sent = [0] * count
        self.closed = 0
        self.answers: list[bytes] = []
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            self.open.append(sock)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _next_byte(self, index: int) -> bytes:
        sent = self.sent[index]
        self.sent[index] += 1
        return _SLOW_HEAD[sent : sent + 1] if sent < len(_SLOW_HEAD) else b"a"

    def _trickle(self) -> None:
        while not self._stop.wait(self.tick_s):
            with self._lock:
                for index, sock in enumerate(self.open):
                    if sock.fileno() < 0 or self._closed_by_server(sock):
                        continue
                    try:
                        sock.send(self._next_byte(index))
                    except (BrokenPipeError, ConnectionResetError):
                        self._note_closed(sock)

    def _closed_by_server(self, sock: socket.socket) -> bool:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return False
        except ConnectionResetError:
            data = b""
        if data:
            # An answer (a 408): the close follows it.
            self.answers.append(data)
            return False
        self._note_closed(sock)
        return True

    def _note_closed(self, sock: socket.socket) -> None:
        self.closed += 1
        sock.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            for sock in self.open:
                sock.close()
            self.open = []


def test_slowloris_does_not_starve_normal_clients(server_factory: ServerFactory) -> None:
    """Hundreds of connections sending their head a byte at a time: polls and
    publications of normal clients are still answered at once, and, with a header
    timeout, the slow connections are answered 408 and closed."""
    timeout_flags = (
        ["--header-timeout", str(HEADER_TIMEOUT_S)] if has_flag("--header-timeout") else []
    )
    server = server_factory(*timeout_flags)
    client = server.client()
    channel = create_channel(client)
    before = server.sockets()
    started = time.monotonic()
    attack = Slowloris(server.port, SLOW_CONNECTIONS)
    try:
        wait_for(
            lambda: server.sockets() >= before + SLOW_CONNECTIONS,
            what="the server to accept every slow connection",
        )
        _normal_traffic_is_prompt(server, client, channel)
        if timeout_flags:
            if time.monotonic() - started < HEADER_TIMEOUT_S:
                assert attack.closed == 0, "slow connections closed before their timeout"
            wait_for(
                lambda: attack.closed == SLOW_CONNECTIONS,
                timeout=HEADER_TIMEOUT_S + 10,
                what="the server to close every slow connection",
            )
            assert any(b" 408 " in answer for answer in attack.answers), attack.answers[:3]
            assert all(
                b"request_timeout" in answer for answer in attack.answers if b" 408 " in answer
            )
            wait_for(lambda: server.sockets() <= before, what="the server's sockets to close")
            # And the server still serves.
            _normal_traffic_is_prompt(server, client, channel)
    finally:
        attack.stop()


def _normal_traffic_is_prompt(server: ServerProcess, client: httpx.Client, channel: int) -> None:
    """A few rounds of: a poll parks, a publication answers it; each step prompt."""
    with ThreadPoolExecutor(max_workers=1) as pool, server.client() as poller:
        cursor = poller.get("/subscribe", params={"channels": channel, "timeout": 0}).json()[
            "cursor"
        ]
        for round_ in range(5):
            started = time.monotonic()
            poll: Future[httpx.Response] = pool.submit(
                poller.get,
                "/subscribe",
                params={"channels": channel, "since": cursor, "timeout": 20},
            )
            wait_for(
                lambda: subscribers(client, channel) == 1, timeout=PROMPT_S, what="a parked poll"
            )
            published = client.post("/publish", json={"channels": [channel], "data": round_})
            assert published.status_code == 201, published.text
            answer = poll.result(timeout=PROMPT_S)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert [message["data"] for message in body["messages"]] == [round_]
            cursor = body["cursor"]
            assert time.monotonic() - started < 3 * PROMPT_S


# -- a connection flood ------------------------------------------------------------------

MAX_CONNECTIONS = 40
FLOOD = 150


def test_connection_flood_past_the_limit(server_factory: ServerFactory) -> None:
    """Far more subscribers than `--max-connections`: those past it are answered 503
    and closed, the server stays responsive on the connections it holds, publications
    reach every parked subscriber, and new clients get in once the flood leaves."""
    if not has_flag("--max-connections"):
        pytest.skip("this server has no --max-connections")
    server = server_factory("--max-connections", str(MAX_CONNECTIONS))
    # Opened before the flood and kept alive: one of the connections the server holds.
    client = server.client()
    channel = create_channel(client)

    target = f"/subscribe?channels={channel}&timeout=30"
    flood = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(FLOOD)]
    refused: set[socket.socket] = set()
    try:
        for sock in flood:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(request_bytes(target))  # or refused and closed already
        with selectors.DefaultSelector() as selector:
            for sock in flood:
                selector.register(sock, selectors.EVENT_READ)

            def accounted() -> bool:
                """Each flood connection either refused (its 503 read and checked) or
                parked on the channel: the server admitted it."""
                for key, _ in selector.select(timeout=0.05):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    selector.unregister(sock)
                    _assert_refused(sock)
                    refused.add(sock)
                return len(refused) + subscribers(client, channel) == FLOOD

            wait_for(accounted, what="every flood connection refused or parked")
        parked = [sock for sock in flood if sock not in refused]
        assert parked, "no subscriber got in"
        assert len(parked) < MAX_CONNECTIONS
        # Responsive: its own connection is served, and a publication lands everywhere.
        assert client.get("/health").status_code == 200
        published = client.post("/publish", json={"channels": [channel], "data": "landed"})
        assert published.status_code == 201, published.text
        for sock in parked:
            answer = read_answer(sock, PROMPT_S)
            assert answer is not None and answer.status == 200, answer
            assert [m["data"] for m in answer.json()["messages"]] == ["landed"]
    finally:
        for sock in flood:
            sock.close()

    # Once the flood has gone, new clients get in again.
    def served() -> bool:
        try:
            return httpx.get(f"{server.url}/health", timeout=PROMPT_S).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(served, what="a new client to be served")


def _assert_refused(sock: socket.socket) -> None:
    answer = read_answer(sock, PROMPT_S)
    assert answer is not None, "a flood connection closed without an answer"
    assert answer.status == 503, (answer.status, answer.body)
    assert answer.json()["error"] == "too_many_connections", answer.body
    assert answer.headers.get("retry-after", "").isdigit(), answer.headers
    assert answer.headers.get("connection") == "close", answer.headers


# -- churn while publishing --------------------------------------------------------------

STABLE_SUBSCRIBERS = 4
CHURNERS = 4
# Each phase publishes at least this many messages and runs at least this many churn
# cycles next to them (publishing on, up to its cap, until the churn has run).
WARM_UP = (200, 400, 1000)  # min messages, min cycles, max messages
ATTACK = (500, 1500, 3000)
# What the server may keep after the churn above its baseline: the messages cached
# since (a few hundred KiB) and allocator slack, far below what leaking a connection's
# state per cycle would add.
RSS_TOLERANCE = 10 * 1024 * 1024


@dataclass
class StableSubscriber:
    """Long-polls one channel from a cursor until told to stop, keeping every message."""

    url: str
    channel: int
    cursor: str | None
    received: list[Any] = field(default_factory=list)
    gaps: int = 0
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                params: dict[str, Any] = {"channels": self.channel, "timeout": 1}
                if self.cursor is not None:
                    params["since"] = self.cursor
                try:
                    response = client.get("/subscribe", params=params)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    return
                if response.status_code != 200:
                    self.errors.append(f"{response.status_code} {response.text}")
                    return
                body = response.json()
                self.gaps += body["gap"]
                self.received.extend(message["data"] for message in body["messages"])
                self.cursor = body["cursor"]


class Churner:
    """Subscribers that come and go: connect, poll (or open a stream), then leave in
    one of several ways (at once, while parked, after the answer), over and over."""

    def __init__(self, port: int, channel: int, latest: Callable[[], str | None]) -> None:
        self.port = port
        self.channel = channel
        self.latest = latest
        self.cycles = 0
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.cycle(self.cycles % 4)
            except (OSError, AssertionError) as exc:
                self.errors.append(repr(exc))
                return
            self.cycles += 1

    def cycle(self, how: int) -> None:
        cursor = self.latest()
        since = "" if cursor is None else f"&since={cursor}"
        path = "/subscribe/sse" if how == 3 else "/subscribe"
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(request_bytes(f"{path}?channels={self.channel}&timeout=0.2{since}"))
            if how == 0:
                return  # gone before the answer, maybe before the request was read
            if how == 1:
                # Parked (or answered) for a moment, then gone.
                sock.settimeout(0.005)
                with contextlib.suppress(TimeoutError):
                    sock.recv(65536)
                return
            if how == 2:
                answer = read_answer(sock, 5)  # the next publication, or the timeout
                assert answer is not None and answer.status == 200, answer
                return
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 "), "no stream"


class Churn:
    """Several churners, each in its own thread, while in the `with` block."""

    def __init__(self, port: int, channel: int, latest: Callable[[], str | None]) -> None:
        self.churners = [Churner(port, channel, latest) for _ in range(CHURNERS)]
        self.threads = [threading.Thread(target=c.run, daemon=True) for c in self.churners]

    def __enter__(self) -> Churn:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for churner in self.churners:
            churner.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)
        errors = [error for churner in self.churners for error in churner.errors]
        assert not errors, errors

    @property
    def cycles(self) -> int:
        return sum(churner.cycles for churner in self.churners)


class Hammer:
    """A publisher sending message after message to one channel, numbered from 0."""

    def __init__(self, client: httpx.Client, channel: int) -> None:
        self.client = client
        self.channel = channel
        self.sent: list[int] = []
        self.last_id: str | None = None

    def run(self, churn: Churn, phase: tuple[int, int, int]) -> list[int]:
        """Publish at least `min_messages` and on until the churn has run `min_cycles`
        (or `max_messages` went out); the numbers published in this phase."""
        min_messages, min_cycles, max_messages = phase
        first = len(self.sent)

        def more() -> bool:
            count = len(self.sent) - first
            return count < min_messages or (churn.cycles < min_cycles and count < max_messages)

        while more():
            seq = len(self.sent)
            response = self.client.post("/publish", json={"channels": [self.channel], "data": seq})
            assert response.status_code == 201, response.text
            self.sent.append(seq)
            self.last_id = response.json()["id"]
        return self.sent[first:]


def test_churn_loses_nothing_and_frees_memory(server_factory: ServerFactory) -> None:
    """Subscribers churn while a publisher hammers one channel: stable subscribers get
    every message once, in order, and the server's memory returns near its baseline."""
    cache = str(sum(phase[2] for phase in (WARM_UP, ATTACK)))  # nothing evicted
    server = server_factory("--data-dir", "none", "--max-messages", cache)
    publisher = server.client()
    channel = create_channel(publisher)
    hammer = Hammer(publisher, channel)
    # The listener and the publisher's connection (maybe a start-up probe's, closing).
    sockets = server.sockets()

    def settled() -> bool:
        return subscribers(publisher, channel) == 0 and server.sockets() <= sockets

    # Warm up the same paths, so the baseline includes what any first use allocates.
    with Churn(server.port, channel, lambda: hammer.last_id) as churn:
        hammer.run(churn, WARM_UP)
    wait_for(settled, what="the warm-up subscribers to leave")
    baseline = rss_bytes(server.proc.pid)

    stable = [
        StableSubscriber(server.url, channel, hammer.last_id) for _ in range(STABLE_SUBSCRIBERS)
    ]
    threads = [threading.Thread(target=s.run, daemon=True) for s in stable]
    for thread in threads:
        thread.start()
    try:
        wait_for(
            lambda: subscribers(publisher, channel) >= STABLE_SUBSCRIBERS,
            what="the stable subscribers to park",
        )
        with Churn(server.port, channel, lambda: hammer.last_id) as churn:
            published = hammer.run(churn, ATTACK)
        wait_for(
            lambda: all(len(s.received) >= len(published) or s.errors for s in stable),
            timeout=20,
            what="every stable subscriber to get every message",
        )
    finally:
        for subscriber in stable:
            subscriber.stop.set()
        for thread in threads:
            thread.join(timeout=10)
    for subscriber in stable:
        assert not subscriber.errors, subscriber.errors
        assert subscriber.gaps == 0
        assert subscriber.received == published, (
            f"{len(subscriber.received)} received of {len(published)}"
        )

    wait_for(settled, what="every subscriber to leave")
    after = rss_bytes(server.proc.pid)
    assert after - baseline < RSS_TOLERANCE, (
        f"RSS grew by {(after - baseline) / 2**20:.1f} MiB over {churn.cycles} churn "
        f"cycles and {len(published)} messages (baseline {baseline / 2**20:.1f} MiB)"
    )

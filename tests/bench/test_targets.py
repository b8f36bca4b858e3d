"""Every benchmark target, driven only by its own request bytes over raw sockets.

The load generator sends exactly what a target's `poll_request`/`publish_request`
build and hands the raw responses to `poll_answer`; these tests do the same against
the real servers (PushUp, the MLP baseline, Nchan), so a target that builds a wrong
request or misreads an answer fails here rather than as odd benchmark figures.
"""

from __future__ import annotations

import glob
import os
import select
import socket
import tempfile
import time
from collections import deque
from collections.abc import Iterator

import httptools
import orjson
import pytest

from pushup.bench.targets import TARGET_NAMES, PollAnswer, PollState, Target, make_target
from tests.helpers import wait_for

LONG = 50.0  # every target serves this poll timeout by default
SHORT = 1.0  # the Nchan target needs it configured (its timeouts are per location)

Response = tuple[int, dict[str, str], bytes]


class RawConnection:
    """One keep-alive connection: send bytes, read whole responses (httptools)."""

    def __init__(self, target: Target) -> None:
        self.sock = socket.create_connection((target.host, target.port), timeout=10)
        self._parser = httptools.HttpResponseParser(self)
        self._done: deque[Response] = deque()
        self._headers: dict[str, str] = {}
        self._body = bytearray()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._headers = {}
        self._body = bytearray()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        self._done.append((status, self._headers, bytes(self._body)))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, timeout: float = 10.0) -> Response:
        deadline = time.monotonic() + timeout
        while not self._done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no response within {timeout} s")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("the server closed the connection")
            self._parser.feed_data(data)
        return self._done.popleft()

    def quiet(self) -> bool:
        """Nothing answered yet (the request is still parked)."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        return not self._done and not readable

    def close(self) -> None:
        self.sock.close()


def _data(answer: PollAnswer) -> list[bytes]:
    """Each message's data: a target may hand back a whole PushUp answer body, which the
    load generator scans as it is; decode it here to compare exactly."""
    found: list[bytes] = []
    for blob in answer.payloads:
        if blob.startswith(b'{"messages":'):
            found += [orjson.dumps(m["data"]) for m in orjson.loads(blob)["messages"]]
        else:
            found.append(blob)
    return found


def _options(name: str) -> dict[str, object]:
    return {"extra_timeouts_s": (SHORT,)} if name == "nchan" else {}


@pytest.fixture(params=TARGET_NAMES)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    server = make_target(request.param, **_options(request.param))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def connections() -> Iterator[list[RawConnection]]:
    opened: list[RawConnection] = []
    yield opened
    for conn in opened:
        conn.close()


def _connect(target: Target, opened: list[RawConnection]) -> RawConnection:
    conn = RawConnection(target)
    opened.append(conn)
    return conn


def _publish(target: Target, conn: RawConnection, channel: str, payload: bytes) -> None:
    conn.send(target.publish_request(channel, payload))
    status, _, body = conn.response()
    assert status in (201, 202), (status, body)  # Nchan: 202 when nobody was waiting


def _parked(target: Target, channel: str, count: int) -> None:
    wait_for(lambda: target.subscribers(channel) == count, what=f"{count} parked poll(s)")


def test_publication_reaches_parked_poll_and_cursor_resumes(
    target: Target, connections: list[RawConnection]
) -> None:
    channel = target.create_channel()
    sub, pub = _connect(target, connections), _connect(target, connections)
    state = PollState(channel)

    sub.send(target.poll_request(state, LONG))
    _parked(target, channel, 1)
    assert sub.quiet()
    _publish(target, pub, channel, b'{"n":1}')
    answer = target.poll_answer(*sub.response())
    assert answer.status == 200
    assert _data(answer) == [b'{"n":1}']
    assert answer.cursor is not None
    state.cursor = answer.cursor

    # Polling again from that cursor gets nothing old: it parks until the next message.
    sub.send(target.poll_request(state, LONG))
    _parked(target, channel, 1)
    assert sub.quiet()
    _publish(target, pub, channel, b'{"n":2}')
    answer = target.poll_answer(*sub.response())
    assert _data(answer) == [b'{"n":2}']
    assert answer.cursor is not None and answer.cursor != state.cursor
    _parked(target, channel, 0)


def test_first_poll_without_cursor_gets_the_cached_message(
    target: Target, connections: list[RawConnection]
) -> None:
    channel = target.create_channel()
    sub, pub = _connect(target, connections), _connect(target, connections)
    _publish(target, pub, channel, b'"cached"')
    sub.send(target.poll_request(PollState(channel), LONG))
    answer = target.poll_answer(*sub.response())
    assert _data(answer) == [b'"cached"']


def test_short_timeout_answers_empty_with_usable_cursor(
    target: Target, connections: list[RawConnection]
) -> None:
    channel = target.create_channel()
    sub, pub = _connect(target, connections), _connect(target, connections)
    state = PollState(channel)

    # A timeout before any message: empty, and polling on afterwards misses nothing.
    sub.send(target.poll_request(state, SHORT))
    answer = target.poll_answer(*sub.response(timeout=SHORT + 5))
    assert (answer.status, _data(answer)) == (200, [])
    if answer.cursor is not None:  # None means "unchanged": keep the one sent
        state.cursor = answer.cursor
    _publish(target, pub, channel, b"1")
    sub.send(target.poll_request(state, SHORT))
    answer = target.poll_answer(*sub.response())
    assert _data(answer) == [b"1"]
    assert answer.cursor is not None
    state.cursor = answer.cursor

    # A timeout after a message: empty, the cursor still past that message only.
    started = time.monotonic()
    sub.send(target.poll_request(state, SHORT))
    answer = target.poll_answer(*sub.response(timeout=SHORT + 5))
    assert time.monotonic() - started >= SHORT * 0.9
    assert (answer.status, _data(answer)) == (200, [])
    if answer.cursor is not None:
        state.cursor = answer.cursor
    _publish(target, pub, channel, b"2")
    sub.send(target.poll_request(state, SHORT))
    answer = target.poll_answer(*sub.response())
    assert _data(answer) == [b"2"]


def test_client_pull_answers_at_once(target: Target, connections: list[RawConnection]) -> None:
    channel = target.create_channel()
    sub, pub = _connect(target, connections), _connect(target, connections)
    state = PollState(channel)
    _publish(target, pub, channel, b"[1]")
    sub.send(target.poll_request(state, 0))
    answer = target.poll_answer(*sub.response(timeout=2))
    assert _data(answer) == [b"[1]"]
    state.cursor = answer.cursor
    sub.send(target.poll_request(state, 0))
    answer = target.poll_answer(*sub.response(timeout=2))
    assert (answer.status, _data(answer)) == (200, [])
    if answer.cursor is not None:
        state.cursor = answer.cursor
    _publish(target, pub, channel, b"[2]")
    sub.send(target.poll_request(state, 0))
    assert _data(target.poll_answer(*sub.response(timeout=2))) == [b"[2]"]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:
        return []


def _nchan_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "pushup-nchan-*")))


@pytest.mark.parametrize("name", TARGET_NAMES)
def test_stop_leaves_no_process_behind(name: str) -> None:
    dirs_before = _nchan_dirs()
    server = make_target(name, **_options(name))
    server.start()
    try:
        pids = server.pids()
        assert pids
        processes = pids + [child for pid in pids for child in _children(pid)]
        if name == "nchan":
            assert len(processes) >= 2  # the master and its worker
        # A parked poll must not hold the shutdown up.
        with socket.create_connection((server.host, server.port), timeout=5) as sub:
            channel = server.create_channel()
            sub.sendall(server.poll_request(PollState(channel), LONG))
            _parked(server, channel, 1)
            started = time.monotonic()
            server.stop()
            assert time.monotonic() - started < 10
    finally:
        server.stop()
    server.stop()  # idempotent
    wait_for(
        lambda: not any(os.path.exists(f"/proc/{pid}") for pid in processes),
        what="every server process to be gone",
    )
    assert server.pids() == []
    assert _nchan_dirs() == dirs_before


def test_nchan_serves_fixed_timeouts_per_location() -> None:
    from pushup.bench.targets.nchan import NchanTarget

    nchan = NchanTarget(subscriber_timeout_s=50, extra_timeouts_s=(1, 5.0))
    assert nchan.location(0) == "/poll"  # client pull: an interval poll, answered at once
    assert nchan.location(1) == "/sub/1"
    assert nchan.location(5) == "/sub/5"
    assert nchan.location(250) == "/sub/50"  # not configured: Nchan's configured timeout
    assert nchan.location(0.1) == "/sub/50"
    with pytest.raises(ValueError):
        NchanTarget(subscriber_timeout_s=0.5)

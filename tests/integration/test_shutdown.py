"""Graceful shutdown on SIGTERM, with real processes: parked polls are answered at once
with their cursor (and a re-poll with it against the restarted server gets exactly
what came after), streams end, a publication in flight is answered and kept, and the
process exits 0 within `--shutdown-timeout`; with `--workers 2` on Redis too."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, wait_for
from tests.integration.test_sse import EventStream

DEADLINE_S = 20.0


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=8)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


def create(server: ServerProcess) -> int:
    channel: int = httpx.post(f"{server.url}/channels").json()["id"]
    return channel


def publish(server: ServerProcess, channels: list[int], data: Any) -> str:
    response = httpx.post(f"{server.url}/publish", json={"channels": channels, "data": data})
    assert response.status_code == 201, response.text
    message_id: str = response.json()["id"]
    return message_id


def subscribers(server: ServerProcess, channel: int) -> int:
    count: int = httpx.get(f"{server.url}/channels/{channel}").json()["subscribers"]
    return count


def park(
    pool: ThreadPoolExecutor, server: ServerProcess, channels: list[int], since: str, count: int
) -> list[Future[httpx.Response]]:
    """`count` long polls, each on a connection of its own, parked on the server."""
    params = {"channels": ",".join(map(str, channels)), "since": since, "timeout": 100}
    polls = [
        pool.submit(httpx.get, f"{server.url}/subscribe", params=params, timeout=DEADLINE_S)
        for _ in range(count)
    ]
    wait_for(
        lambda: subscribers(server, channels[0]) == count,
        timeout=DEADLINE_S,
        what=f"{count} polls to park",
    )
    return polls


def released(polls: list[Future[httpx.Response]], since: str) -> list[str]:
    """Each poll's answer: 200, no messages, no gap, the connection closed; their cursors."""
    cursors = []
    for poll in polls:
        response = poll.result(timeout=DEADLINE_S)
        assert response.status_code == 200, response.text
        assert response.headers["connection"] == "close"
        answer = response.json()
        assert answer["messages"] == []
        assert answer["gap"] is False
        assert int(answer["cursor"]) >= int(since)
        cursors.append(answer["cursor"])
    return cursors


def after(server: ServerProcess, channels: list[int], cursor: str) -> list[Any]:
    params = {"channels": ",".join(map(str, channels)), "since": cursor, "timeout": 0}
    response = httpx.get(f"{server.url}/subscribe", params=params)
    assert response.status_code == 200, response.text
    return [message["data"] for message in response.json()["messages"]]


def terminate(server: ServerProcess, timeout: float = DEADLINE_S) -> float:
    """SIGTERM; the seconds until the process exited, with code 0."""
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=timeout) == 0, server.log()
    return time.monotonic() - started


def refusing(server: ServerProcess) -> bool:
    """Whether the server has closed its listening socket."""
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=1.0).close()
    except ConnectionRefusedError:
        return True
    return False


# -- one process, the embedded engine and its journal --------------------------------------


def test_parked_polls_get_their_cursor_and_miss_nothing_across_a_restart(
    server_factory: ServerFactory, pool: ThreadPoolExecutor, tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "data")
    first = server_factory("--data-dir", data_dir, "--shutdown-timeout", "60")
    a, b = create(first), create(first)
    seen = publish(first, [a], "seen")
    polls = park(pool, first, [a, b], seen, 3)
    # Nothing is in flight: it stops without waiting for the timeout.
    assert terminate(first, timeout=60) < 30
    cursors = released(polls, seen)
    assert "Traceback" not in first.log()

    second = server_factory("--data-dir", data_dir)
    publish(second, [a], "next")
    publish(second, [a, b], "both")
    publish(second, [b], "last")
    for cursor in cursors:
        assert after(second, [a, b], cursor) == ["next", "both", "last"]


def test_streams_end_when_the_server_stops(server_factory: ServerFactory) -> None:
    server = server_factory()
    a = create(server)
    stream = EventStream.open(server.port, f"/subscribe/sse?channels={a}")
    assert stream.head.status == 200
    wait_for(lambda: subscribers(server, a) == 1, what="the stream to subscribe")
    terminate(server)
    stream.assert_ends()
    stream.close()


def test_a_publication_in_flight_is_answered_and_kept(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "data")
    server = server_factory("--data-dir", data_dir)
    a = create(server)
    body = json.dumps({"channels": [a], "data": "in flight"}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE_S)
    head = (
        "POST /publish HTTP/1.1\r\nHost: pushup\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    )
    sock.sendall(head.encode())
    # The server has read the head once it asks for the body.
    assert read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 100 Continue")
    server.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: refusing(server), timeout=DEADLINE_S, what="the server to stop accepting")
    sock.sendall(body)
    answer = read_to_end(sock)
    sock.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 201 Created", answer
    assert b"\r\nConnection: close\r\n" in b"\r\n" + rest
    message_id = json.loads(answer.partition(b"\r\n\r\n")[2])["id"]
    assert server.proc.wait(timeout=DEADLINE_S) == 0

    restarted = server_factory("--data-dir", data_dir)
    response = httpx.get(f"{restarted.url}/subscribe", params={"channels": a, "timeout": 0})
    assert [m["id"] for m in response.json()["messages"]] == [message_id]


def test_the_stop_is_bounded_by_the_shutdown_timeout(server_factory: ServerFactory) -> None:
    server = server_factory("--shutdown-timeout", "1")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE_S)
    # An answered request first: the server has accepted the connection.
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: pushup\r\n\r\n")
    read_until(sock, b'"ok"}')
    sock.sendall(b"GET /subscribe?channels=1 HTTP/1.1\r\nHost: push")  # and never more
    elapsed = terminate(server)
    assert 0.9 <= elapsed < 10, elapsed
    assert "still open after 1 s" in server.log()
    with contextlib.suppress(ConnectionResetError):  # cut: reset, or closed
        assert read_to_end(sock) == b""
    sock.close()


# -- several workers on Redis ---------------------------------------------------------------


def test_workers_answer_their_parked_polls_and_a_successor_goes_on(
    server_factory: ServerFactory, pool: ThreadPoolExecutor, redis_url: str
) -> None:
    first = server_factory("--workers", "2", "--engine", redis_url)
    a = create(first)
    seen = publish(first, [a], "seen")
    polls = park(pool, first, [a], seen, 6)
    terminate(first)
    cursors = released(polls, seen)
    assert "Traceback" not in first.log()

    second = server_factory("--workers", "2", "--engine", redis_url)
    publish(second, [a], "next")
    for cursor in cursors:
        assert after(second, [a], cursor) == ["next"]


# -- raw sockets -----------------------------------------------------------------------------


def read_until(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    while end not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed after {data!r}"
        data += chunk
    return data


def read_to_end(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data

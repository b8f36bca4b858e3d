"""HTTP/1.1 on the wire: keep-alive, pipelining, bodies, 100-continue, limits, timeouts.

Raw sockets, so the bytes sent and received are exactly the ones the test names.
Channels are created and published to with httpx on separate connections.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ServerProcess, start_server, wait_for

ServerFactory = Callable[..., ServerProcess]

KiB = 1024
MiB = 1024 * KiB
MAX_BODY = 1 * MiB
MAX_HEAD = 64 * KiB

_names = itertools.count()


# -- the wire ------------------------------------------------------------------------


@dataclass
class RawResponse:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]  # names lower-cased, in the order sent
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, f"{name} sent {len(values)} times: {self.headers}"
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]

    def json(self) -> Any:
        assert self.header("content-type") == "application/json", self.headers
        return json.loads(self.body)


class Wire:
    """One client connection; reads whole responses, several of which may come in one recv."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buffer = bytearray()

    def send(self, *parts: bytes) -> None:
        """Each part in its own write."""
        for part in parts:
            self.sock.sendall(part)

    def close(self) -> None:
        self.sock.close()

    def _more(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        chunk = self.sock.recv(256 * KiB)
        if not chunk:
            raise AssertionError(
                f"the server closed the connection; unread: {bytes(self.buffer)!r}"
            )
        self.buffer += chunk

    def read_response(self, timeout: float | None = None) -> RawResponse:
        """Status line, headers, then exactly Content-Length bytes (none for 1xx and 204)."""
        wait = self.timeout if timeout is None else timeout
        while b"\r\n\r\n" not in self.buffer:
            self._more(wait)
        end = self.buffer.index(b"\r\n\r\n")
        head = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        status_line, *lines = head.split("\r\n")
        version, status_text, reason = status_line.split(" ", 2)
        assert version == "HTTP/1.1", status_line
        headers: list[tuple[str, str]] = []
        for line in lines:
            name, colon, value = line.partition(":")
            assert colon and name == name.strip(), f"bad header line {line!r}"
            headers.append((name.lower(), value.strip()))
        response = RawResponse(version, int(status_text), reason, headers, b"")
        assert response.header("transfer-encoding") is None, headers
        if response.status < 200 or response.status in (204, 304):
            return response
        length = response.header("content-length")
        assert length is not None and length.isdigit(), f"no usable Content-Length: {headers}"
        size = int(length)
        while len(self.buffer) < size:
            self._more(wait)
        response.body = bytes(self.buffer[:size])
        del self.buffer[:size]
        return response

    def assert_nothing_arrives(self, wait: float = 0.3) -> None:
        assert not self.buffer, f"unexpected bytes: {bytes(self.buffer)!r}"
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(64 * KiB)
        except TimeoutError:
            return
        raise AssertionError(f"expected nothing yet, got {data!r}")

    def assert_closed(self, timeout: float | None = None) -> None:
        """The server closes the connection, with nothing more sent first."""
        assert not self.buffer, f"unexpected bytes: {bytes(self.buffer)!r}"
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(64 * KiB)
        except TimeoutError:
            raise AssertionError("the server did not close the connection") from None
        assert data == b"", f"expected the connection closed, got {data!r}"

    def wait_closed(self, timeout: float) -> None:
        """Wait for the server to close, ignoring whatever it sends before (e.g. a 408)."""
        deadline = time.monotonic() + timeout
        self.buffer.clear()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the server did not close the connection in {timeout}s")
            self.sock.settimeout(left)
            try:
                if not self.sock.recv(64 * KiB):
                    return
            except TimeoutError:
                continue


def request(
    method: str,
    target: str,
    *,
    body: bytes | None = None,
    headers: Iterable[tuple[str, str]] = (),
    version: str = "HTTP/1.1",
) -> bytes:
    """A request's bytes; a body gets a Content-Length."""
    lines = [f"{method} {target} {version}", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join([*lines, "", ""]).encode("latin-1") + (body or b"")


def post_json(target: str, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    body = json.dumps(payload).encode()
    return request(
        "POST", target, body=body, headers=[("Content-Type", "application/json"), *headers]
    )


def chunk(data: bytes) -> bytes:
    return b"%X\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def assert_error(response: RawResponse, status: int) -> None:
    assert response.status == status, (response.status, response.body)
    payload = response.json()
    assert isinstance(payload.get("error"), str) and payload["error"], payload
    assert isinstance(payload.get("detail"), str) and payload["detail"], payload
    assert response.header("content-length") == str(len(response.body))


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_server() -> Iterator[ServerProcess]:
    """One server for the tests that cannot disturb each other."""
    server = start_server()
    yield server
    server.stop()
    log = server.log()
    assert "Traceback" not in log, f"the server logged a traceback:\n{log}"


@pytest.fixture(scope="module")
def api(shared_server: ServerProcess) -> httpx.Client:
    return shared_server.client()


@pytest.fixture
def connect(shared_server: ServerProcess) -> Iterator[Callable[..., Wire]]:
    """Open raw connections (to the shared server unless told); all closed afterwards."""
    opened: list[Wire] = []

    def open_wire(server: ServerProcess | None = None, timeout: float = 10.0) -> Wire:
        wire = Wire((server or shared_server).port, timeout)
        opened.append(wire)
        return wire

    yield open_wire
    for wire in opened:
        wire.close()


def new_channel(api: httpx.Client) -> int:
    response = api.post("/channels", json={})
    assert response.status_code == 201, response.text
    channel: int = response.json()["id"]
    return channel


def subscribers(api: httpx.Client, channel: int | str) -> int:
    count: int = api.get(f"/channels/{channel}").json()["subscribers"]
    return count


def publish(api: httpx.Client, channel: int, data: Any) -> dict[str, Any]:
    response = api.post("/publish", json={"channels": [channel], "data": data})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def cached_data(api: httpx.Client, channel: int) -> list[Any]:
    response = api.get("/subscribe", params={"channels": channel, "timeout": 0})
    assert response.status_code == 200, response.text
    return [message["data"] for message in response.json()["messages"]]


def assert_serves(server: ServerProcess) -> None:
    """A fresh connection is answered normally."""
    wire = Wire(server.port)
    try:
        wire.send(request("GET", "/health"))
        response = wire.read_response()
        assert response.status == 200
        assert response.json() == {"status": "ok"}
    finally:
        wire.close()


# -- keep-alive ----------------------------------------------------------------------


def test_keep_alive_serves_several_requests_on_one_connection(
    connect: Callable[..., Wire], api: httpx.Client
) -> None:
    channel = new_channel(api)
    wire = connect()
    for n in range(5):
        wire.send(post_json("/publish", {"channels": [channel], "data": n}))
        response = wire.read_response()
        assert response.status == 201, response.body
        assert response.header("connection") != "close"
        wire.send(request("GET", "/health"))
        assert wire.read_response().json() == {"status": "ok"}
    assert cached_data(api, channel) == [0, 1, 2, 3, 4]
    wire.assert_nothing_arrives()


def test_http10_closes_by_default(connect: Callable[..., Wire]) -> None:
    wire = connect()
    wire.send(request("GET", "/health", version="HTTP/1.0"))
    response = wire.read_response()
    assert response.status == 200
    assert response.json() == {"status": "ok"}
    assert (response.header("connection") or "").lower() != "keep-alive"
    wire.assert_closed()


def test_http10_keep_alive_stays_open(connect: Callable[..., Wire]) -> None:
    wire = connect()
    for _ in range(3):
        wire.send(
            request("GET", "/health", headers=[("Connection", "keep-alive")], version="HTTP/1.0")
        )
        response = wire.read_response()
        assert response.status == 200
        assert (response.header("connection") or "").lower() == "keep-alive"
        assert response.json() == {"status": "ok"}
    wire.assert_nothing_arrives()
    # Without the header again, HTTP/1.0 falls back to closing.
    wire.send(request("GET", "/health", version="HTTP/1.0"))
    assert wire.read_response().status == 200
    wire.assert_closed()


def test_connection_close_request_is_answered_then_closed(connect: Callable[..., Wire]) -> None:
    wire = connect()
    wire.send(request("GET", "/health", headers=[("Connection", "close")]))
    response = wire.read_response()
    assert response.status == 200
    assert response.json() == {"status": "ok"}
    assert (response.header("connection") or "").lower() == "close"
    wire.assert_closed()


def test_requests_pipelined_after_connection_close_are_not_answered(
    connect: Callable[..., Wire], api: httpx.Client
) -> None:
    channel = new_channel(api)
    wire = connect()
    wire.send(
        request("GET", "/health", headers=[("Connection", "close")])
        + post_json("/publish", {"channels": [channel], "data": "after close"})
    )
    assert wire.read_response().status == 200
    wire.assert_closed()
    assert cached_data(api, channel) == []


# -- pipelining ----------------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(connect: Callable[..., Wire]) -> None:
    name = f"pipeline-{next(_names)}"
    wire = connect()
    # Each answer depends on the requests before it, so only in-order handling passes.
    wire.send(
        post_json("/channels", {"name": name})
        + request("GET", f"/channels/{name}")
        + post_json("/publish", {"channels": [name], "data": "first"})
        + post_json("/publish", {"channels": [name], "data": "second"})
        + request("GET", f"/subscribe?channels={name}&timeout=0")
        + request("DELETE", f"/channels/{name}")
        + request("GET", f"/channels/{name}")
        + request("GET", "/health")
    )
    created = wire.read_response()
    assert created.status == 201, created.body
    channel = created.json()["id"]
    info = wire.read_response()
    assert info.status == 200
    assert info.json()["messages"] == 0
    first, second = wire.read_response(), wire.read_response()
    assert (first.status, second.status) == (201, 201)
    assert first.json()["channels"] == second.json()["channels"] == [channel]
    poll = wire.read_response()
    assert poll.status == 200
    assert [m["data"] for m in poll.json()["messages"]] == ["first", "second"]
    assert wire.read_response().status == 204
    assert_error(wire.read_response(), 404)
    assert wire.read_response().json() == {"status": "ok"}
    wire.assert_nothing_arrives()


def test_pipelined_requests_wait_behind_a_parked_poll(
    connect: Callable[..., Wire], api: httpx.Client
) -> None:
    channel = new_channel(api)
    wire = connect()
    wire.send(
        request("GET", f"/subscribe?channels={channel}&timeout=30")
        + request("GET", "/health")
        + request("GET", f"/channels/{channel}")
    )
    wait_for(lambda: subscribers(api, channel) == 1, what="the poll to park")
    wire.assert_nothing_arrives(0.5)
    published = publish(api, channel, {"wake": True})
    poll = wire.read_response()
    assert poll.status == 200
    assert [m["id"] for m in poll.json()["messages"]] == [published["id"]]
    assert wire.read_response().json() == {"status": "ok"}
    info = wire.read_response()
    assert info.status == 200
    assert info.json()["subscribers"] == 0
    assert info.json()["last_message_id"] == published["id"]
    wire.assert_nothing_arrives()


def test_pipelined_requests_written_while_parked_wait_their_turn(
    connect: Callable[..., Wire], api: httpx.Client
) -> None:
    channel = new_channel(api)
    wire = connect()
    wire.send(request("GET", f"/subscribe?channels={channel}&timeout=30"))
    wait_for(lambda: subscribers(api, channel) == 1, what="the poll to park")
    wire.send(request("GET", "/health"), request("GET", "/nowhere"))
    wire.assert_nothing_arrives(0.5)
    publish(api, channel, 1)
    assert wire.read_response().json()["messages"][0]["data"] == 1
    assert wire.read_response().json() == {"status": "ok"}
    assert_error(wire.read_response(), 404)


# -- request bodies ------------------------------------------------------------------


def test_content_length_body_in_several_writes(
    connect: Callable[..., Wire], api: httpx.Client
) -> None:
    channel = new_channel(api)
    body = json.dumps({"channels": [channel], "data": {"text": "x" * 5000}}).encode()
    head = request("POST", "/publish", headers=[("Content-Length", str(len(body)))])
    wire = connect()
    wire.send(head[:10], head[10:], body[:7])
    wire.assert_nothing_arrives(0.2)
    wire.send(body[7:3000])
    wire.assert_nothing_arrives(0.2)
    wire.send(body[3000:])
    response = wire.read_response()
    assert response.status == 201, response.body
    assert response.json()["channels"] == [channel]
    assert cached_data(api, channel) == [{"text": "x" * 5000}]


def test_chunked_body_in_several_writes(connect: Callable[..., Wire], api: httpx.Client) -> None:
    channel = new_channel(api)
    body = json.dumps({"channels": [channel], "data": ["chunked", "y" * 3000]}).encode()
    head = request("POST", "/publish", headers=[("Transfer-Encoding", "chunked")])
    pieces = [body[:1], body[1:20], body[20:2500], body[2500:]]
    encoded = b"".join(chunk(piece) for piece in pieces) + LAST_CHUNK
    wire = connect()
    wire.send(head)
    # Split the chunked stream at awkward places: inside sizes, data and CRLFs.
    cuts = [0, 2, 5, 9, 40, 1000, 2600, len(encoded) - 3, len(encoded)]
    for start, end in itertools.pairwise(cuts[:-1]):
        wire.send(encoded[start:end])
    wire.assert_nothing_arrives(0.2)
    wire.send(encoded[cuts[-2] :])
    response = wire.read_response()
    assert response.status == 201, response.body
    assert cached_data(api, channel) == [["chunked", "y" * 3000]]


def test_chunked_body_with_extensions_and_trailer_then_pipelined_request(
    connect: Callable[..., Wire], api: httpx.Client
) -> None:
    channel = new_channel(api)
    body = json.dumps({"channels": [channel], "data": "trailer"}).encode()
    wire = connect()
    wire.send(
        request("POST", "/publish", headers=[("Transfer-Encoding", "chunked")])
        + b"%x;note=first\r\n%s\r\n" % (10, body[:10])
        + chunk(body[10:])
        + b"0\r\nX-Trailer: yes\r\n\r\n"
        + request("GET", "/health")
    )
    response = wire.read_response()
    assert response.status == 201, response.body
    assert wire.read_response().json() == {"status": "ok"}
    assert cached_data(api, channel) == ["trailer"]


# -- Expect: 100-continue ------------------------------------------------------------


def test_expect_continue_gets_100_before_the_body_is_sent(
    connect: Callable[..., Wire], api: httpx.Client
) -> None:
    channel = new_channel(api)
    body = json.dumps({"channels": [channel], "data": "continued"}).encode()
    wire = connect()
    wire.send(
        request(
            "POST",
            "/publish",
            headers=[("Expect", "100-continue"), ("Content-Length", str(len(body)))],
        )
    )
    assert wire.read_response().status == 100
    wire.assert_nothing_arrives(0.2)
    wire.send(body)
    final = wire.read_response()
    assert final.status == 201, final.body
    assert cached_data(api, channel) == ["continued"]
    # The connection goes on normally.
    wire.send(request("GET", "/health"))
    assert wire.read_response().json() == {"status": "ok"}


def test_expect_continue_behind_a_parked_poll_waits_its_turn(
    connect: Callable[..., Wire], api: httpx.Client
) -> None:
    channel = new_channel(api)
    body = json.dumps({"channels": [channel], "data": "second"}).encode()
    wire = connect()
    wire.send(request("GET", f"/subscribe?channels={channel}&timeout=30"))
    wait_for(lambda: subscribers(api, channel) == 1, what="the poll to park")
    wire.send(
        request(
            "POST",
            "/publish",
            headers=[("Expect", "100-continue"), ("Content-Length", str(len(body)))],
        )
    )
    # A 100 now would read as the interim answer to the poll.
    wire.assert_nothing_arrives(0.5)
    publish(api, channel, "first")
    poll = wire.read_response()
    assert poll.status == 200
    assert [m["data"] for m in poll.json()["messages"]] == ["first"]
    assert wire.read_response().status == 100
    wire.send(body)
    assert wire.read_response().status == 201
    assert cached_data(api, channel) == ["first", "second"]


def test_expect_continue_with_too_large_body_gets_413_without_100(
    connect: Callable[..., Wire], shared_server: ServerProcess
) -> None:
    wire = connect()
    wire.send(
        request(
            "POST",
            "/publish",
            headers=[("Expect", "100-continue"), ("Content-Length", str(MAX_BODY + 1))],
        )
    )
    response = wire.read_response()  # would be a 100 if the server waited for the body
    assert_error(response, 413)
    wire.assert_closed()
    assert_serves(shared_server)


# -- limits --------------------------------------------------------------------------


def test_request_line_over_64_kib_gets_431_then_close(
    connect: Callable[..., Wire], shared_server: ServerProcess
) -> None:
    wire = connect()
    wire.send(b"GET /health?pad=" + b"a" * MAX_HEAD + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_error(wire.read_response(), 431)
    wire.assert_closed()
    assert_serves(shared_server)


def test_headers_over_64_kib_get_431_then_close(
    connect: Callable[..., Wire], shared_server: ServerProcess
) -> None:
    wire = connect()
    wire.send(request("GET", "/health", headers=[("X-Big", "b" * MAX_HEAD)]))
    assert_error(wire.read_response(), 431)
    wire.assert_closed()
    assert_serves(shared_server)


def test_many_headers_over_64_kib_get_431_then_close(
    connect: Callable[..., Wire], shared_server: ServerProcess
) -> None:
    headers = [(f"X-H{n}", "v" * 100) for n in range(MAX_HEAD // 100)]
    wire = connect()
    wire.send(request("GET", "/health", headers=headers))
    assert_error(wire.read_response(), 431)
    wire.assert_closed()
    assert_serves(shared_server)


def test_unfinished_header_over_64_kib_gets_431_then_close(
    connect: Callable[..., Wire], shared_server: ServerProcess
) -> None:
    """The limit holds while the head is still arriving, not only once it is complete."""
    wire = connect()
    wire.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Endless: " + b"e" * (MAX_HEAD + 16))
    assert_error(wire.read_response(timeout=5.0), 431)
    wire.assert_closed()
    assert_serves(shared_server)


def test_content_length_over_1_mib_gets_413_before_the_body(
    connect: Callable[..., Wire], shared_server: ServerProcess
) -> None:
    wire = connect()
    wire.send(request("POST", "/publish", headers=[("Content-Length", str(MAX_BODY + 1))]))
    assert_error(wire.read_response(), 413)
    wire.assert_closed()
    assert_serves(shared_server)


def test_body_over_1_mib_sent_in_full_still_gets_413(
    connect: Callable[..., Wire], api: httpx.Client, shared_server: ServerProcess
) -> None:
    """As a client that does not wait (curl, httpx) sends it: headers and body at once."""
    channel = new_channel(api)
    payload = {"channels": [channel], "data": "z" * MAX_BODY}
    wire = connect()
    # The server may stop reading and close once it has answered.
    with contextlib.suppress(OSError):
        wire.send(post_json("/publish", payload))
    assert_error(wire.read_response(), 413)
    assert cached_data(api, channel) == []
    assert_serves(shared_server)


def test_body_of_exactly_1_mib_is_accepted(connect: Callable[..., Wire], api: httpx.Client) -> None:
    channel = new_channel(api)
    envelope = json.dumps({"channels": [channel], "data": ""}).encode()
    filler = "f" * (MAX_BODY - len(envelope))
    body = json.dumps({"channels": [channel], "data": filler}).encode()
    assert len(body) == MAX_BODY
    wire = connect()
    wire.send(request("POST", "/publish", body=body))
    assert wire.read_response().status == 201
    assert cached_data(api, channel) == [filler]


def test_chunked_body_over_1_mib_gets_413(
    connect: Callable[..., Wire], api: httpx.Client, shared_server: ServerProcess
) -> None:
    channel = new_channel(api)
    wire = connect()
    wire.send(
        request("POST", "/publish", headers=[("Transfer-Encoding", "chunked")]),
        chunk(b" " * (MAX_BODY // 2)),
        chunk(b" " * (MAX_BODY // 2)),
        # The byte over the limit ends what is sent: the answer cannot wait for more.
        b"1\r\n ",
    )
    assert_error(wire.read_response(), 413)
    wire.assert_closed()
    assert cached_data(api, channel) == []
    assert_serves(shared_server)


def urllib_refusal(url: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """The error status and JSON body urllib reads for a request the server refuses;
    fails with the OSError urllib raises if it cannot read them."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, **kwargs), timeout=30):
            pass
    except urllib.error.HTTPError as error:
        with error:
            payload: dict[str, Any] = json.loads(error.read())
        return error.code, payload
    raise AssertionError("the request was accepted")


def test_a_client_still_sending_its_body_reads_the_413(shared_server: ServerProcess) -> None:
    """urllib sends the whole 2 MiB body before it reads anything: the server answers
    after the head and must go on reading, or the client gets a reset instead."""
    body = b"x" * (2 * MiB)
    for _ in range(20):
        status, payload = urllib_refusal(
            shared_server.url + "/publish",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        assert (status, payload["error"]) == (413, "payload_too_large"), payload
    assert_serves(shared_server)


def test_httpx_and_curl_sending_the_whole_body_read_the_413(
    shared_server: ServerProcess, tmp_path: Path
) -> None:
    """The same 2 MiB publication from the other clients (curl without its `Expect:
    100-continue`, so it too sends everything before it reads)."""
    body = tmp_path / "body.json"
    body.write_bytes(b"x" * (2 * MiB))
    url = shared_server.url + "/publish"
    for _ in range(5):
        with httpx.Client(timeout=30) as client:
            answer = client.post(url, content=body.read_bytes())
        assert (answer.status_code, answer.json()["error"]) == (413, "payload_too_large")
        curl = subprocess.run(
            ["curl", "-sS", "-H", "Expect:", "--data-binary", f"@{body}", url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert curl.returncode == 0, curl.stderr
        assert json.loads(curl.stdout)["error"] == "payload_too_large", curl.stdout
    assert_serves(shared_server)


def test_a_client_still_sending_its_head_reads_the_431(
    connect: Callable[..., Wire], shared_server: ServerProcess
) -> None:
    """As above with a head: the client sends 2 MiB more once the answer is there, as
    one that writes before it reads would, then reads it."""
    wire = connect()
    wire.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * (MAX_HEAD + 16))
    wire.sock.recv(1, socket.MSG_PEEK)  # the answer has come (the server is done)
    for _ in range(32):
        wire.send(b"b" * (64 * KiB))
    assert_error(wire.read_response(), 431)
    wire.assert_closed()
    assert_serves(shared_server)


def test_a_client_still_sending_after_a_bad_request_line_reads_the_400(
    connect: Callable[..., Wire], shared_server: ServerProcess
) -> None:
    """The third early answer: the request line is refused before the rest arrives."""
    wire = connect()
    wire.send(b"POST /publish HTTP/1.1 extra\r\nHost: x\r\n")
    wire.sock.recv(1, socket.MSG_PEEK)  # the answer has come (the server is done)
    for _ in range(32):
        wire.send(b"b" * (64 * KiB))
    assert_error(wire.read_response(), 400)
    wire.assert_closed()
    assert_serves(shared_server)


def test_a_client_that_never_stops_sending_is_cut_off(
    server_factory: ServerFactory, connect: Callable[..., Wire]
) -> None:
    """After the answer the server reads and drops what comes, but only so much."""
    server = server_factory()
    wire = connect(server)
    wire.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Endless: " + b"e" * (MAX_HEAD + 16))
    assert_error(wire.read_response(), 431)  # readable while the client still sends
    sent = 0
    with pytest.raises(OSError):  # a reset, or a broken pipe
        while sent < 256 * MiB:
            wire.sock.sendall(b"e" * (64 * KiB))
            sent += 64 * KiB
    # Read for a while after the answer, up to the bound (4 MiB) plus what the two
    # sockets' buffers held.
    assert 2 * MiB < sent < 48 * MiB, sent
    wait_for(lambda: server.connections() == 0, what="the connection to end")


def test_a_client_that_trickles_forever_is_cut_off(
    server_factory: ServerFactory, connect: Callable[..., Wire]
) -> None:
    server = server_factory()
    wire = connect(server)
    wire.send(request("POST", "/publish", headers=[("Content-Length", str(MAX_BODY + 1))]))
    assert_error(wire.read_response(), 413)
    answered = time.monotonic()
    with pytest.raises(OSError):
        while time.monotonic() - answered < 30:
            wire.sock.sendall(b"{")
            time.sleep(0.05)  # the pace of a slow client, not a wait for state
    # Cut off by the time bound (5 s), not by the bytes it sent.
    assert 4 < time.monotonic() - answered < 15
    wait_for(lambda: server.connections() == 0, what="the connection to end")


def test_http11_without_host_gets_400_then_close(
    connect: Callable[..., Wire], shared_server: ServerProcess
) -> None:
    """RFC 9112 3.2. HTTP/1.0 had no Host header: it is served without one."""
    wire = connect()
    wire.send(b"GET /health HTTP/1.1\r\n\r\n")
    response = wire.read_response()
    assert_error(response, 400)
    assert response.json()["error"] == "bad_request"
    wire.assert_closed()
    old = connect()
    old.send(b"GET /health HTTP/1.0\r\n\r\n")
    assert old.read_response().json() == {"status": "ok"}
    old.assert_closed()
    assert_serves(shared_server)


@pytest.mark.parametrize(
    "garbage",
    [
        b"HELLO\r\n\r\n",
        b"GET /health HTTP/1.1 extra\r\n\r\n",
        b"GET /health HTTP/9.9\r\n\r\n",
        b"GET\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)),  # a TLS hello
        b"GET /health HTTP/1.1\r\nBad Header\r\n\r\n",
    ],
    ids=["no-target", "extra-token", "bad-version", "method-only", "tls", "bad-header"],
)
def test_malformed_request_gets_400_then_close(
    connect: Callable[..., Wire], shared_server: ServerProcess, garbage: bytes
) -> None:
    wire = connect()
    wire.send(garbage)
    assert_error(wire.read_response(), 400)
    wire.assert_closed()
    assert_serves(shared_server)


def test_malformed_request_after_good_ones_is_answered_in_turn(
    connect: Callable[..., Wire],
) -> None:
    wire = connect()
    wire.send(request("GET", "/health") + request("GET", "/nowhere") + b"NONSENSE\r\n\r\n")
    assert wire.read_response().json() == {"status": "ok"}
    assert_error(wire.read_response(), 404)
    assert_error(wire.read_response(), 400)
    wire.assert_closed()


def test_content_length_with_chunked_is_not_used_to_frame_the_body(
    connect: Callable[..., Wire], api: httpx.Client
) -> None:
    """Both framings at once is the request-smuggling shape. RFC 9112 6.1: reject it, or
    read the body as chunked; either way close the connection after answering."""
    channel = new_channel(api)
    body = json.dumps({"channels": [channel], "data": "smuggled"}).encode()
    wire = connect()
    wire.send(
        request(
            "POST",
            "/publish",
            headers=[("Transfer-Encoding", "chunked"), ("Content-Length", str(len(body) + 7))],
        )
        + chunk(body)
        + LAST_CHUNK
    )
    response = wire.read_response()
    if response.status == 201:
        assert cached_data(api, channel) == ["smuggled"]
    else:
        assert_error(response, 400)
        assert cached_data(api, channel) == []
    wire.assert_closed()


# -- parked clients that leave -------------------------------------------------------


def test_client_disconnecting_while_parked_is_dropped_at_once(
    connect: Callable[..., Wire], api: httpx.Client
) -> None:
    channel = new_channel(api)
    wire = connect()
    wire.send(request("GET", f"/subscribe?channels={channel}&timeout=60"))
    wait_for(lambda: subscribers(api, channel) == 1, what="the poll to park")
    wire.close()
    wait_for(lambda: subscribers(api, channel) == 0, timeout=5.0, what="the subscriber dropped")


def test_client_disconnecting_while_parked_with_many_pipelined_is_dropped(
    connect: Callable[..., Wire], api: httpx.Client
) -> None:
    """Even when enough requests queue behind the poll that the server stops reading."""
    channel = new_channel(api)
    wire = connect()
    wire.send(request("GET", f"/subscribe?channels={channel}&timeout=60"))
    wait_for(lambda: subscribers(api, channel) == 1, what="the poll to park")
    wire.send(request("GET", "/health") * 40)
    wire.assert_nothing_arrives(0.3)
    wire.close()
    wait_for(lambda: subscribers(api, channel) == 0, timeout=5.0, what="the subscriber dropped")


def test_client_disconnecting_from_several_channels_is_dropped_from_all(
    connect: Callable[..., Wire], api: httpx.Client
) -> None:
    channels = [new_channel(api) for _ in range(3)]
    wire = connect()
    wire.send(request("GET", f"/subscribe?channels={','.join(map(str, channels))}&timeout=60"))
    wait_for(
        lambda: all(subscribers(api, c) == 1 for c in channels), what="the poll to park everywhere"
    )
    wire.close()
    wait_for(
        lambda: all(subscribers(api, c) == 0 for c in channels),
        timeout=5.0,
        what="the subscriber dropped from every channel",
    )


# -- hostile neighbours --------------------------------------------------------------


def test_slow_and_garbage_connections_do_not_stop_other_clients(
    connect: Callable[..., Wire], api: httpx.Client, shared_server: ServerProcess
) -> None:
    silent = [connect() for _ in range(30)]
    half_head = [connect() for _ in range(30)]
    for wire in half_head:
        wire.send(b"GET /subscribe?chan")
    half_body = [connect() for _ in range(30)]
    for wire in half_body:
        wire.send(request("POST", "/publish", headers=[("Content-Length", "1000")]) + b'{"chan')
    garbage = [connect() for _ in range(30)]
    for n, wire in enumerate(garbage):
        wire.send(bytes((n * 7 + i) % 256 for i in range(200)) + b"\r\n\r\n")

    # Normal clients, raw and httpx, get a full round trip meanwhile.
    channel = new_channel(api)
    poller = connect()
    poller.send(request("GET", f"/subscribe?channels={channel}&timeout=30"))
    wait_for(lambda: subscribers(api, channel) == 1, what="the poll to park")
    published = publish(api, channel, "through")
    answer = poller.read_response()
    assert answer.status == 200
    assert [m["id"] for m in answer.json()["messages"]] == [published["id"]]
    assert_serves(shared_server)

    for wire in garbage:
        assert_error(wire.read_response(), 400)
        wire.assert_closed()
    for wire in silent + half_head + half_body:
        wire.assert_nothing_arrives(0.01)


# -- response framing ----------------------------------------------------------------


def test_json_responses_are_framed_by_content_length(
    connect: Callable[..., Wire], api: httpx.Client
) -> None:
    channel = new_channel(api)
    wire = connect()
    cases: list[tuple[bytes, int]] = [
        (request("GET", "/health"), 200),
        (post_json("/channels", {}), 201),
        (post_json("/publish", {"channels": [channel], "data": "é ✓"}), 201),
        (request("GET", f"/subscribe?channels={channel}&timeout=0"), 200),
        (request("GET", f"/channels/{channel}"), 200),
        (request("GET", "/nowhere"), 404),
        (request("PUT", "/publish", body=b"{}"), 405),
        (request("POST", "/publish", body=b"{not json"), 400),
        (request("GET", "/subscribe?channels=999999999&timeout=0"), 404),
    ]
    wire.send(b"".join(raw for raw, _ in cases))  # one write: bodies must not run together
    for raw, status in cases:
        response = wire.read_response()
        assert response.status == status, (raw, response.body)
        assert response.header("content-type") == "application/json"
        assert response.header("content-length") == str(len(response.body))
        json.loads(response.body)
    wire.assert_nothing_arrives()


def test_204_has_no_body(connect: Callable[..., Wire], api: httpx.Client) -> None:
    channel = new_channel(api)
    wire = connect()
    wire.send(request("DELETE", f"/channels/{channel}"))
    response = wire.read_response()
    assert response.status == 204
    assert response.header("content-length") in (None, "0")
    assert response.header("transfer-encoding") is None
    wire.assert_nothing_arrives()
    # The next response on the connection starts right where the 204 ended.
    wire.send(request("GET", "/health"))
    assert wire.read_response().json() == {"status": "ok"}


# -- idle connections ----------------------------------------------------------------


def test_idle_keep_alive_connection_is_closed_by_the_server(
    server_factory: ServerFactory, connect: Callable[..., Wire]
) -> None:
    server = server_factory("--keepalive-timeout", "1")
    used = connect(server)
    used.send(request("GET", "/health"))
    assert used.read_response().status == 200
    answered = time.monotonic()
    silent = connect(server)
    half_request = connect(server)
    half_request.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    used.assert_closed(timeout=10.0)
    assert time.monotonic() - answered >= 0.5, "closed long before the keep-alive timeout"
    silent.wait_closed(timeout=10.0)
    half_request.wait_closed(timeout=10.0)
    assert_serves(server)


def test_parked_poll_longer_than_keepalive_timeout_is_not_closed(
    server_factory: ServerFactory, connect: Callable[..., Wire]
) -> None:
    server = server_factory("--keepalive-timeout", "1")
    client = server.client()
    channel = new_channel(client)
    parked = connect(server)
    parked.send(request("GET", f"/subscribe?channels={channel}&timeout=3"))
    wait_for(lambda: subscribers(client, channel) == 1, what="the poll to park")
    idle = connect(server)
    idle.assert_closed(timeout=10.0)  # the idle sweep has run past the timeout
    # The parked poll outlives the keep-alive timeout and ends with its own.
    answer = parked.read_response(timeout=15.0)
    assert answer.status == 200
    assert answer.json()["messages"] == []
    # Once answered, the connection is idle like any other.
    parked.assert_closed(timeout=10.0)


def test_upgrade_request_is_answered_in_http11_then_closed(connect: Callable[..., Wire]) -> None:
    """An h2c upgrade (what `curl --http2` sends) is ignored: plain answer, then close."""
    wire = connect()
    upgrade = [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c")]
    wire.send(request("GET", "/health", headers=[*upgrade, ("HTTP2-Settings", "AAMAAABkAAQ")]))
    response = wire.read_response()
    assert response.status == 200
    assert response.json() == {"status": "ok"}
    assert (response.header("connection") or "").lower() == "close"
    wire.assert_closed()

"""A full disk under the journal, with real processes on a small tmpfs: every
publication is answered at once (503 with Retry-After, a detail naming the disk),
nothing unwritten is counted or served, the log says it in one line, a SIGTERM
answers the publications in flight, and the server recovers by itself once there is
space again."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, wait_for
from tests.integration.test_shutdown import read_to_end, read_until, refusing

DEADLINE_S = 20.0
# Far below the time a hung write would take; far above a refused one.
ANSWER_BOUND_S = 5.0
PAD = "x" * 20_000


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        # Lazily: a server the test left running lets go of it when it stops.
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def fill(disk: Path) -> Path:
    """Take every free byte of `disk` with a file of the test's own."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while os.write(fd, bytes(65536)):
            pass
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def disk_full_lines(server: ServerProcess) -> list[str]:
    """The lines saying the disk is full (one per outage)."""
    return [line for line in server.log().splitlines() if "the disk of the data directory" in line]


def publish(client: httpx.Client, channel: int, n: int) -> httpx.Response:
    """One publication of about 20 KB, timed against the bound."""
    started = time.monotonic()
    response = client.post("/publish", json={"channels": [channel], "data": {"n": n, "p": PAD}})
    assert time.monotonic() - started < ANSWER_BOUND_S, f"answered after {n}"
    return response


def assert_refused_for_the_disk(status: int, headers: httpx.Headers, body: bytes) -> None:
    assert status == 503, body
    assert headers["retry-after"] == "1"
    answer = json.loads(body)
    assert answer["error"] == "engine_unavailable"
    assert answer["detail"] == "the server's disk is full: nothing was stored; retry later"


def stored(client: httpx.Client, channel: int) -> list[str]:
    answer = client.get("/subscribe", params={"channels": channel, "timeout": 0})
    assert answer.status_code == 200, answer.text
    return [message["id"] for message in answer.json()["messages"]]


def test_a_full_disk_answers_at_once_counts_only_what_is_written_and_recovers(
    small_disk: Path, server_factory: ServerFactory
) -> None:
    data_dir = str(small_disk / "data")
    server = server_factory("--data-dir", data_dir)
    client = server.client()
    client.timeout = httpx.Timeout(ANSWER_BOUND_S)  # a hang fails at once
    channel = client.post("/channels", json={"ttl": 600}).json()["id"]
    acknowledged = [publish(client, channel, n).json()["id"] for n in range(3)]
    filler = fill(small_disk)

    refused = 0
    for n in range(3, 40):
        response = publish(client, channel, n)
        if response.status_code == 201:  # room left in the WAL's own pages
            acknowledged.append(response.json()["id"])
        else:
            assert_refused_for_the_disk(response.status_code, response.headers, response.content)
            refused += 1
    assert refused > 0
    info = client.get(f"/channels/{channel}").json()
    assert (info["messages"], info["last_message_id"]) == (len(acknowledged), acknowledged[-1])
    assert stored(client, channel) == acknowledged
    (line,) = disk_full_lines(server)
    assert f" ERROR pushup.journal[{server.proc.pid}]: the disk of the data directory " in line
    assert "Traceback" not in server.log()

    filler.unlink()

    def written() -> str | None:
        response = publish(client, channel, -1)
        return response.json()["id"] if response.status_code == 201 else None

    acknowledged.append(wait_for(written, timeout=DEADLINE_S, what="a publication to pass"))
    assert (client.get(f"/channels/{channel}").json()["messages"]) == len(acknowledged)
    assert f"the journal in {data_dir} is written again" in server.log()
    assert len(disk_full_lines(server)) == 1
    server.stop()
    server = server_factory("--data-dir", data_dir)
    assert stored(server.client(), channel) == acknowledged


def test_a_stop_while_the_disk_is_full_answers_the_publications_in_flight(
    small_disk: Path, server_factory: ServerFactory
) -> None:
    data_dir = str(small_disk / "data")
    server = server_factory("--data-dir", data_dir, "--shutdown-timeout", "30")
    client = server.client()
    channel = client.post("/channels", json={"ttl": 600}).json()["id"]
    first = publish(client, channel, 0).json()["id"]
    filler = fill(small_disk)  # the server has not written since: it does not know yet
    body = json.dumps({"channels": [channel], "data": {"p": PAD}}).encode()
    head = (
        "POST /publish HTTP/1.1\r\nHost: pushup\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    socks = []
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE_S)
        sock.sendall(head)
        # The server has read the head once it asks for the body.
        assert read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 100 Continue")
        socks.append(sock)
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: refusing(server), timeout=DEADLINE_S, what="the server to stop accepting")
    for sock in socks:
        sock.sendall(body)
    for sock in socks:
        answer = read_to_end(sock)
        sock.close()
        head_bytes, _, content = answer.partition(b"\r\n\r\n")
        status_line, *header_lines = head_bytes.decode().split("\r\n")
        headers = httpx.Headers([tuple(h.split(": ", 1)) for h in header_lines])
        assert headers["connection"] == "close"
        assert_refused_for_the_disk(int(status_line.split()[1]), headers, content)
    assert server.proc.wait(timeout=DEADLINE_S) == 0
    assert time.monotonic() - started < ANSWER_BOUND_S * 2
    assert len(disk_full_lines(server)) == 1
    # What the refused publications changed of their channel (its expiry) is let go.
    assert (
        "stopping with the latest changes to 1 channel not written to the journal in "
        f"{data_dir} (the disk is full)"
    ) in server.log()
    assert "Traceback" not in server.log()

    filler.unlink()
    server = server_factory("--data-dir", data_dir)
    assert stored(server.client(), channel) == [first]

"""A damaged journal, with real processes: random bytes in a page, a file cut short or
emptied, in the database, its WAL, or both. Whatever the damage, the server starts,
serves only valid JSON and only what was published, and says in one error line what
it lost, exactly as much as it lost; never a traceback, never a silent loss. A restart
after that says nothing more."""

from __future__ import annotations

import random
import re
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import ServerFactory
from tests.helpers import ServerProcess

DATABASE = "journal.sqlite3"
MESSAGES = 300
LOSS_LINE = "did not get everything back"


def kill(server: ServerProcess) -> None:
    server.proc.kill()
    server.proc.wait()


def publish(server: ServerProcess, channels: list[int], count: int, start: int) -> dict[str, Any]:
    """`count` messages, each to one of `channels` in turn: their data by id."""
    client = server.client()
    published = {}
    for n in range(start, start + count):
        data = {"n": n, "pad": "x" * 200}
        body = {"channels": [channels[n % len(channels)]], "data": data}
        response = client.post("/publish", json=body)
        assert response.status_code == 201, response.text
        published[response.json()["id"]] = data
    return published


def journal_with(
    server_factory: ServerFactory, data_dir: Path, where: str
) -> tuple[list[int], dict[str, Any]]:
    """A journal whose messages are in the database file (a clean stop), in the WAL (a
    kill), or in both; its channels, and what was published."""
    server = server_factory("--data-dir", str(data_dir))
    client = server.client()
    channels = [client.post("/channels", json=body).json()["id"] for body in ({"name": "a"}, {})]
    if where == "both":
        published = publish(server, channels, MESSAGES // 2, 0)
        server.stop()
        server = server_factory("--data-dir", str(data_dir))
        published |= publish(server, channels, MESSAGES // 2, MESSAGES // 2)
    else:
        published = publish(server, channels, MESSAGES, 0)
    if where == "db":
        server.stop()  # checkpoints: everything is in the database file
    else:
        kill(server)  # the latest commits are in the WAL only
    return channels, published


def damage(path: Path, how: str, rng: random.Random) -> None:
    size = path.stat().st_size
    if how == "emptied":
        path.write_bytes(b"")
    elif how == "truncated":
        with path.open("r+b") as file:
            file.truncate(size // 2)
    else:  # 64 random bytes in one page
        page = rng.randrange(size // 4096)
        with path.open("r+b") as file:
            file.seek(page * 4096 + rng.randrange(4096 - 64))
            file.write(rng.randbytes(64))


def served(server: ServerProcess, channels: list[int]) -> dict[str, Any]:
    """Every message the server serves on `channels`, by id, each answer checked to be
    JSON; a channel may be gone (404), never a message twice or out of order."""
    client = server.client()
    found: dict[str, Any] = {}
    for channel in channels:
        params: dict[str, Any] = {"channels": channel, "timeout": 0}
        while True:
            answer = client.get("/subscribe", params=params)
            assert answer.headers["content-type"].startswith("application/json")
            body = orjson.loads(answer.content)  # raises on anything but JSON
            if answer.status_code == 404:
                break
            assert answer.status_code == 200, body
            if not body["messages"]:
                break
            ids = [int(message["id"]) for message in body["messages"]]
            assert ids == sorted(set(ids))
            for message in body["messages"]:
                assert message["id"] not in found
                found[message["id"]] = message["data"]
            params["since"] = body["cursor"]
    return found


def loss_lines(server: ServerProcess) -> list[str]:
    return [line for line in server.log().splitlines() if LOSS_LINE in line]


def claimed(line: str) -> int:
    """How many messages a loss line says are lost."""
    counts = re.findall(
        r"(?:(\d[\d,]*) acknowledged messages? up to"
        r"|acknowledged (\d[\d,]*) messages? up to"
        r"|(\d[\d,]*) messages?(?: and \d+ channels?)? damaged)",
        line,
    )
    return sum(int(n.replace(",", "")) for groups in counts for n in groups if n)


def check_start(
    server_factory: ServerFactory, data_dir: Path, channels: list[int], published: dict[str, Any]
) -> ServerProcess:
    """Start on the damaged journal and check what it serves against what it says."""
    server = server_factory("--data-dir", str(data_dir))
    found = served(server, channels)
    for message_id, data in found.items():
        assert published.get(message_id) == data, f"{message_id} was never published so"
    lost = len(published) - len(found)
    lines = loss_lines(server)
    if lost:
        assert len(lines) == 1, server.log()
        (line,) = lines
        assert " ERROR pushup.journal" in line and f"the journal in {data_dir} " in line
        if re.search(r"\d channels? damaged", line):
            # Messages gone with a damaged channel row are not counted one by one.
            assert claimed(line) <= lost, line
        else:
            assert claimed(line) == lost, line
    else:
        assert lines == [], lines
    # It goes on, with ids above all it acknowledged; a restart says nothing more.
    client = server.client()
    channel = client.post("/channels").json()["id"]
    assert channel > max(channels)
    response = client.post("/publish", json={"channels": [channel], "data": "after"})
    assert response.status_code == 201, response.text
    assert int(response.json()["id"]) > max(map(int, published))
    server.stop()
    again = server_factory("--data-dir", str(data_dir))
    assert loss_lines(again) == []
    return again


@pytest.mark.parametrize("how", ["page", "truncated", "emptied"])
@pytest.mark.parametrize("where", ["db", "wal", "both"])
def test_a_damaged_journal_starts_serving_only_json_and_says_exactly_what_it_lost(
    server_factory: ServerFactory, tmp_path: Path, where: str, how: str
) -> None:
    data_dir = tmp_path / "data"
    channels, published = journal_with(server_factory, data_dir, where)
    rng = random.Random(f"{where}-{how}")
    files = {"db": [DATABASE], "wal": [f"{DATABASE}-wal"], "both": [DATABASE, f"{DATABASE}-wal"]}
    for name in files[where]:
        damage(data_dir / name, how, rng)
    check_start(server_factory, data_dir, channels, published)


def test_a_payload_changed_on_disk_is_never_served(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """Still valid JSON, and SQLite's integrity check finds nothing: the checksum does."""
    data_dir = tmp_path / "data"
    channels, published = journal_with(server_factory, data_dir, "db")
    path = data_dir / DATABASE
    content = path.read_bytes()
    target = b'{"n":137,'
    assert content.count(target) == 1
    path.write_bytes(content.replace(target, b'{"n":731,'))
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()
    server = check_start(server_factory, data_dir, channels, published)
    found = served(server, channels)
    assert len(found) == MESSAGES - 1
    assert {"n": 137, "pad": "x" * 200} not in found.values()


def test_a_wal_cut_short_says_how_many_acknowledged_messages_are_missing(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    channels, published = journal_with(server_factory, data_dir, "wal")
    wal = data_dir / f"{DATABASE}-wal"
    with wal.open("r+b") as file:
        file.truncate(wal.stat().st_size // 3)
    server = server_factory("--data-dir", str(data_dir))
    lost = len(published) - len(served(server, channels))
    assert 0 < lost < len(published)
    (line,) = loss_lines(server)
    assert f"{lost} acknowledged messages up to id {max(published, key=int)} (" in line
    assert f"({DATABASE}-wal was lost, cut short or damaged" in line

"""The embedded engine's data directory, with real processes: a server killed with
SIGKILL and started again on it has its channels and cached messages back, two
servers never share one, and `--data-dir none` keeps nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ServerFactory
from tests.helpers import ServerProcess


def kill(server: ServerProcess) -> None:
    """As a crash would: no chance to write anything more."""
    server.proc.kill()
    server.proc.wait()


def publish(client: httpx.Client, channels: list[int | str], data: object) -> str:
    response = client.post("/publish", json={"channels": channels, "data": data})
    assert response.status_code == 201, response.text
    message_id: str = response.json()["id"]
    return message_id


def test_a_killed_server_restarts_where_it_stopped(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "data")
    server = server_factory("--data-dir", data_dir)
    client = server.client()
    news = client.post("/channels", json={"name": "news", "ttl": 600}).json()["id"]
    other = client.post("/channels", json={}).json()["id"]
    published = [publish(client, [news], {"n": i}) for i in range(5)]
    both = publish(client, [news, other], "both")
    # A subscriber has read the first two messages: this is its cursor.
    seen = client.get("/subscribe", params={"channels": news, "timeout": 0}).json()
    cursor = seen["messages"][1]["id"]
    assert cursor == published[1]

    kill(server)
    server = server_factory("--data-dir", data_dir)
    client = server.client()
    answer = client.get("/subscribe", params={"channels": news, "since": cursor, "timeout": 0})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [m["id"] for m in body["messages"]] == [*published[2:], both]
    assert [m["data"] for m in body["messages"]] == [{"n": 2}, {"n": 3}, {"n": 4}, "both"]
    assert body["messages"][-1]["channels"] == [news]
    assert (body["cursor"], body["gap"]) == (both, False)

    info = client.get("/channels/news").json()
    assert (info["id"], info["messages"], info["last_message_id"]) == (news, 6, both)
    assert client.get(f"/channels/{other}").json()["messages"] == 1
    # Ids go on growing, for messages and channels alike.
    after = publish(client, ["news"], "after")
    assert int(after) > int(both)
    assert client.post("/channels", json={}).json()["id"] > other
    body = client.get("/subscribe", params={"channels": news, "since": both}).json()
    assert [m["data"] for m in body["messages"]] == ["after"]


def test_a_second_server_on_the_same_data_directory_exits_with_a_clear_error(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = server_factory("--data-dir", str(data_dir))
    second = subprocess.run(
        [sys.executable, "-m", "pushup", "serve", "--port", "0", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    lines = (second.stdout + second.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0] == (
        f"Error: --data-dir {data_dir} cannot be used: the data directory {data_dir} is in use "
        f"by another pushup server (pid {first.proc.pid}); give each server its own --data-dir"
    )
    # The first one goes on serving.
    assert first.client().get("/health").status_code == 200


def test_data_dir_none_keeps_nothing(server_factory: ServerFactory, tmp_path: Path) -> None:
    server = server_factory("--data-dir", "none", cwd=tmp_path)
    client = server.client()
    channel = client.post("/channels", json={"name": "news"}).json()["id"]
    publish(client, [channel], "gone")
    kill(server)
    server = server_factory("--data-dir", "none", cwd=tmp_path)
    assert server.client().get("/channels/news").status_code == 404
    assert list(tmp_path.iterdir()) == []

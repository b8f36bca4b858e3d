"""The embedded engine's data directory, with real processes: a server killed with
SIGKILL and started again on it has its channels and cached messages back (five kills
in a row under eight publishing connections lose nothing acknowledged), two servers
never share one, and `--data-dir none` keeps nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, until


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


# -- SIGKILL under load --------------------------------------------------------------------

PUBLISHERS = 8
KILLS = 5
# Acknowledged publications between two kills: each kill lands mid-stream.
BETWEEN_KILLS = 1000


@dataclass
class Ledger:
    """What the publishers know: each (publisher, seq) acknowledged with its id, or
    sent without an answer (a kill cut it off: stored or not, never twice)."""

    acknowledged: dict[tuple[int, int], str] = field(default_factory=dict)
    unanswered: set[tuple[int, int]] = field(default_factory=set)


async def _publish_until(
    url: str, publisher: int, channel: int, ledger: Ledger, up: asyncio.Event, done: asyncio.Event
) -> None:
    """Publish one message after another on one connection; after a kill, on a new
    one once the server is back (`up`)."""
    seq = 0
    while not done.is_set():
        await up.wait()
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(url, connector=connector) as session:
            while not done.is_set():
                body = {"channels": [channel], "data": {"p": publisher, "seq": seq}}
                try:
                    async with session.post("/publish", json=body) as response:
                        assert response.status == 201, await response.text()
                        ledger.acknowledged[publisher, seq] = (await response.json())["id"]
                except (aiohttp.ClientError, ConnectionError):
                    ledger.unanswered.add((publisher, seq))
                    seq += 1
                    break
                seq += 1


def _read_all(client: httpx.Client, channel: int) -> list[dict[str, Any]]:
    """Every message the channel holds, in order, page by page."""
    messages: list[dict[str, Any]] = []
    params: dict[str, Any] = {"channels": channel, "timeout": 0}
    while True:
        answer = client.get("/subscribe", params=params)
        assert answer.status_code == 200, answer.text
        page = orjson.loads(answer.content)
        if not page["messages"]:
            return messages
        messages += page["messages"]
        params["since"] = page["cursor"]


async def test_five_kills_under_eight_publishers_lose_nothing_acknowledged(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """SIGKILL five times in a row while eight connections publish: every acknowledged
    publication is read back after the last restart, with its id, in order, none twice."""
    flags = ("--data-dir", str(tmp_path / "data"), "--max-messages", "1000000")
    server = await asyncio.to_thread(server_factory, *flags)
    channel = httpx.post(f"{server.url}/channels", json={"ttl": 3600}).json()["id"]
    ledger = Ledger()
    up, done = asyncio.Event(), asyncio.Event()
    up.set()
    publishers = [
        asyncio.create_task(_publish_until(server.url, p, channel, ledger, up, done))
        for p in range(PUBLISHERS)
    ]
    try:
        for _ in range(KILLS):
            target = len(ledger.acknowledged) + BETWEEN_KILLS
            await until(_acked(ledger, target), timeout=60, what=f"{target} acknowledged")
            up.clear()
            kill(server)
            server = await asyncio.to_thread(server_factory, *flags, port=server.port)
            up.set()
    finally:
        done.set()
        await asyncio.gather(*publishers, return_exceptions=True)
    for task in publishers:
        task.result()

    messages = _read_all(server.client(), channel)
    ids = [int(m["id"]) for m in messages]
    assert ids == sorted(set(ids)), "out of order, or an id twice"
    sent = [(m["data"]["p"], m["data"]["seq"]) for m in messages]
    assert len(sent) == len(set(sent)), "a publication stored twice"
    stored = dict(zip(sent, (m["id"] for m in messages), strict=True))
    lost = [key for key, message_id in ledger.acknowledged.items() if stored.get(key) != message_id]
    assert lost == [], f"{len(lost)} of {len(ledger.acknowledged)} acknowledged lost: {lost[:5]}"
    # Whatever else is there was sent when a kill came, never answered.
    assert set(stored) - set(ledger.acknowledged) <= ledger.unanswered
    # Each publisher's messages are in the order it sent them.
    for p in range(PUBLISHERS):
        seqs = [seq for publisher, seq in sent if publisher == p]
        assert seqs == sorted(seqs)
    assert len(ledger.acknowledged) >= KILLS * BETWEEN_KILLS


def _acked(ledger: Ledger, count: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return len(ledger.acknowledged) >= count

    return probe

"""Per-channel retention, on every engine: `POST /channels` takes a channel's own
`message_ttl` and `max_messages` (at most the server's), the channel keeps no more
than that, every answer about the channel shows it, and it survives a restart of any
store that keeps channels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, start_server, wait_for
from tests.integration.test_subscriber_api import assert_error

Json = dict[str, Any]
LIMITS = ("--message-ttl", "60", "--max-messages", "10")


@pytest.fixture(params=["memory", "journal", "redis", "nats"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def flags(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, ...]:
    """The flags that start a node on the engine under test (again, after a restart)."""
    store: tuple[str, ...] = ("--data-dir", "none")
    if engine == "journal":
        store = ("--data-dir", str(tmp_path / "data"))
    elif engine != "memory":
        store = ("--engine", str(request.getfixturevalue(f"{engine}_url")))
    return (*store, *LIMITS)


@pytest.fixture(scope="module")
def plain_node() -> Iterator[ServerProcess]:
    """One embedded server for the checks of input, which every engine shares."""
    node = start_server("--data-dir", "none", *LIMITS)
    yield node
    node.stop_checked()


@pytest.fixture
def node(server_factory: ServerFactory, flags: tuple[str, ...]) -> ServerProcess:
    return server_factory(*flags)


def make(client: httpx.Client, **body: object) -> httpx.Response:
    return client.post("/channels", json=body)


def poll(client: httpx.Client, channel: int) -> Json:
    answer = client.get("/subscribe", params={"channels": channel, "timeout": 0})
    assert answer.status_code == 200, answer.text
    body: Json = answer.json()
    return body


def publish(client: httpx.Client, channels: list[int], count: int) -> None:
    messages = [{"channels": channels, "data": n} for n in range(count)]
    assert client.post("/publish/batch", json={"messages": messages}).status_code == 201


def test_a_channel_keeps_at_most_its_own_count(node: ServerProcess) -> None:
    with node.client() as client:
        made = make(client, name="short", max_messages=2)
        assert made.status_code == 201, made.text
        body = made.json()
        assert (body["max_messages"], body["message_ttl"]) == (2, 60)
        plain = make(client).json()
        assert (plain["max_messages"], plain["message_ttl"]) == (10, 60)
        publish(client, [body["id"], plain["id"]], 5)
        short = poll(client, body["id"])
        assert ([m["data"] for m in short["messages"]], short["gap"]) == ([3, 4], True)
        assert len(poll(client, plain["id"])["messages"]) == 5
        info = client.get("/channels/short").json()
        assert (info["messages"], info["max_messages"], info["message_ttl"]) == (2, 2, 60)
        (listed,) = client.get("/channels", params={"prefix": "short"}).json()["channels"]
        assert (listed["messages"], listed["max_messages"]) == (2, 2)


def test_a_channel_drops_messages_past_its_own_ttl(node: ServerProcess) -> None:
    with node.client() as client:
        brief = make(client, message_ttl=1).json()
        plain = make(client).json()
        assert brief["message_ttl"] == 1
        publish(client, [brief["id"], plain["id"]], 2)
        wait_for(
            lambda: poll(client, brief["id"])["messages"] == [],
            timeout=15,
            what="the brief channel's messages to age out",
        )
        assert poll(client, brief["id"])["gap"] is True
        assert len(poll(client, plain["id"])["messages"]) == 2
        assert client.get(f"/channels/{brief['id']}").json()["messages"] == 0


def test_retention_survives_a_restart(
    engine: str, server_factory: ServerFactory, flags: tuple[str, ...]
) -> None:
    if engine == "memory":
        pytest.skip("--data-dir none keeps nothing across a restart")
    first = server_factory(*flags)
    with first.client() as client:
        made = make(client, name="kept", message_ttl=30, max_messages=3).json()
    first.stop_checked()
    again = server_factory(*flags)
    with again.client() as client:
        info = client.get("/channels/kept").json()
        assert (info["id"], info["message_ttl"], info["max_messages"]) == (made["id"], 30, 3)
        publish(client, [made["id"]], 5)
        assert [m["data"] for m in poll(client, made["id"])["messages"]] == [2, 3, 4]


def test_get_or_create_finds_the_channel_with_its_own_retention(node: ServerProcess) -> None:
    with node.client() as client:
        first = make(client, name="room", exist_ok=True, max_messages=5)
        assert first.status_code == 201, first.text
        found = make(client, name="room", exist_ok=True, max_messages=2, message_ttl=9)
        assert found.status_code == 200, found.text
        assert (found.json()["max_messages"], found.json()["message_ttl"]) == (5, 60)


@pytest.mark.parametrize(
    ("body", "code", "detail"),
    [
        ({"message_ttl": 61}, "above_server_limit", "message_ttl 61 is above"),
        ({"max_messages": 11}, "above_server_limit", "max_messages 11 is above"),
        ({"message_ttl": 0}, "invalid_body", "message_ttl must be"),
        ({"message_ttl": -5}, "invalid_body", "message_ttl must be"),
        ({"message_ttl": "10"}, "invalid_body", "message_ttl must be"),
        ({"max_messages": 0}, "invalid_body", "max_messages must be"),
        ({"max_messages": 2.5}, "invalid_body", "max_messages must be"),
        ({"max_messages": True}, "invalid_body", "max_messages must be"),
    ],
)
def test_bad_retention_is_a_400_naming_the_field(
    plain_node: ServerProcess, body: Json, code: str, detail: str
) -> None:
    with plain_node.client() as client:
        answer = make(client, **body)
        assert detail in assert_error(answer, 400, code)["detail"]
        assert "--m" in answer.json()["detail"] or code == "invalid_body"

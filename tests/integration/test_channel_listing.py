"""Channel listing, on every engine: `GET /channels` pages through the live channels,
by id or by name under a prefix, with no channel twice and none skipped while others are
made between pages; with a shared engine, over every node: a channel made through one
node is listed by the other, and its subscribers are summed over both."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, start_server, wait_for
from tests.integration.test_subscriber_api import assert_error

Json = dict[str, Any]


@pytest.fixture(params=["memory", "journal", "redis", "nats"])
def nodes(
    request: pytest.FixtureRequest, server_factory: ServerFactory, tmp_path: Path
) -> tuple[ServerProcess, ServerProcess]:
    """Two nodes of one shared engine, or the one server of an embedded engine twice."""
    if request.param == "memory":
        node = server_factory("--data-dir", "none")
        return node, node
    if request.param == "journal":
        node = server_factory("--data-dir", str(tmp_path / "data"))
        return node, node
    url = str(request.getfixturevalue(f"{request.param}_url"))
    return server_factory("--engine", url), server_factory("--engine", url)


@pytest.fixture(scope="module")
def plain_node() -> Iterator[ServerProcess]:
    """One embedded server for the checks of input, which every engine shares."""
    node = start_server("--data-dir", "none")
    yield node
    node.stop_checked()


@pytest.fixture
def clients(nodes: tuple[ServerProcess, ServerProcess]) -> Iterator[tuple[httpx.Client, ...]]:
    with nodes[0].client() as a, nodes[1].client() as b:
        yield a, b


def make(client: httpx.Client, name: str | None = None, **body: object) -> int:
    made = client.post("/channels", json={**body, **({} if name is None else {"name": name})})
    assert made.status_code == 201, made.text
    channel_id: int = made.json()["id"]
    return channel_id


def listing(client: httpx.Client, **params: object) -> Json:
    answer = client.get("/channels", params=params)
    assert answer.status_code == 200, answer.text
    body: Json = answer.json()
    return body


def every_page(
    client: httpx.Client, after: str | None = None, **params: object
) -> list[list[Json]]:
    pages = []
    while True:
        body = listing(client, **params, **({} if after is None else {"after": after}))
        pages.append(body["channels"])
        after = body["next"]
        if after is None:
            return pages


def test_pages_list_every_channel_once_in_id_order_from_any_node(
    clients: tuple[httpx.Client, httpx.Client],
) -> None:
    a, b = clients
    made = [make(a, name) for name in ("room:2", None, "room:1", None, "lobby")]
    first = listing(b, limit=2)
    assert [c["id"] for c in first["channels"]] == made[:2]
    assert first["next"] == str(made[1])
    later = make(a, "late")  # made between two pages: listed last
    rest = every_page(b, limit=2, after=first["next"])
    listed = [c["id"] for page in [first["channels"], *rest] for c in page]
    assert listed == [*made, later]
    shown = first["channels"][0]
    assert set(shown) == {
        "id",
        "name",
        "expires_at",
        "messages",
        "subscribers",
        "message_ttl",
        "max_messages",
    }
    assert (shown["name"], shown["messages"], shown["subscribers"]) == ("room:2", 0, 0)


def test_a_prefix_lists_matching_names_in_name_order(
    clients: tuple[httpx.Client, httpx.Client],
) -> None:
    a, b = clients
    for name in ("tag:go", "tag:c++", "other", "tag:ada", "tag"):
        make(a, name)
    make(a)
    pages = every_page(b, prefix="tag:", limit=2)
    assert [[c["name"] for c in page] for page in pages] == [
        ["tag:ada", "tag:c++"],
        ["tag:go"],
    ]
    assert listing(b, prefix="tag:", limit=2)["next"] == "tag:c++"
    assert listing(b, prefix="none:")["channels"] == []


def test_messages_and_subscribers_over_every_node(
    clients: tuple[httpx.Client, httpx.Client],
) -> None:
    a, b = clients
    channel = make(a, "busy")
    quiet = make(a, "quiet")
    published = a.post("/publish", json={"channels": [channel], "data": 1})
    assert published.status_code == 201, published.text
    cursor = published.json()["id"]
    polls = [
        threading.Thread(
            target=client.get,
            args=("/subscribe",),
            kwargs={"params": {"channels": channel, "since": cursor, "timeout": 30}},
            daemon=True,
        )
        for client in (a, b)
        for _ in range(2)
    ]
    for poll in polls:
        poll.start()

    def shown() -> list[tuple[int, int]] | None:
        found = [(c["messages"], c["subscribers"]) for c in listing(b, prefix="")["channels"]]
        return found if found == [(1, 4), (0, 0)] else None

    # Both channels listed (an empty prefix is no prefix), each with its counts.
    assert listing(a, prefix="")["channels"][1]["id"] == quiet
    wait_for(shown, timeout=20, what="the parked polls of both nodes counted")
    a.post("/publish", json={"channels": [channel], "data": 2})
    for poll in polls:
        poll.join(timeout=20)


def test_closed_channels_are_not_listed(clients: tuple[httpx.Client, httpx.Client]) -> None:
    a, b = clients
    gone, kept = make(a, "gone"), make(a, "kept")
    assert a.delete(f"/channels/{gone}").status_code == 204
    assert [c["id"] for c in listing(b)["channels"]] == [kept]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=-1",
        "limit=ten",
        "after=room",
        "after=0",
        "after=99999999999999999",
        "limit=2&limit=3",
        "prefix=" + "x" * 201,
    ],
)
def test_a_bad_query_is_a_400_naming_it(plain_node: ServerProcess, query: str) -> None:
    with plain_node.client() as client:
        answer = client.get(f"/channels?{query}")
    name = query.split("=")[0]
    assert name in assert_error(answer, 400, "invalid_parameter")["detail"]


def test_the_limit_has_a_default(nodes: tuple[ServerProcess, ...]) -> None:
    with nodes[0].client() as client:
        for _ in range(51):
            make(client)
        first = listing(client)
        assert len(first["channels"]) == 50
        assert len(listing(client, after=first["next"])["channels"]) == 1


def test_listing_is_a_publisher_call(server_factory: ServerFactory) -> None:
    node = server_factory("--data-dir", "none", "--publisher-key", "k" * 32)
    with node.client() as client:
        assert_error(client.get("/channels"), 401, "unauthorized")
        answer = client.get("/channels", headers={"Authorization": "Bearer " + "k" * 32})
        assert answer.status_code == 200, answer.text


def test_the_journal_lists_the_channels_it_restored(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    flags = ("--data-dir", str(tmp_path / "data"))
    node = server_factory(*flags)
    with node.client() as client:
        made = [make(client, name) for name in ("x", None, "y")]
    node.stop_checked()
    again = server_factory(*flags)
    with again.client() as client:
        assert [c["id"] for c in listing(client)["channels"]] == made
        assert [c["name"] for c in listing(client, prefix="y")["channels"]] == ["y"]

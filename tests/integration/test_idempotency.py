"""Idempotent publishing against real servers, on every engine: a publication retried
with the same `Idempotency-Key` gets its first answer again and is stored and delivered
once, also when the retry comes while the first is in flight, after the server was
killed with -9 and restarted on its journal, and through another node of a Redis or
NATS cluster."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, wait_for
from tests.integration.test_get_or_create import errors_counted
from tests.integration.test_persistence import kill
from tests.integration.test_subscriber_api import assert_error
from tests.natsservers import NatsServer, nodes_on

Json = dict[str, Any]


@pytest.fixture(params=["memory", "redis", "nats"])
def node(request: pytest.FixtureRequest, server_factory: ServerFactory) -> ServerProcess:
    flags: tuple[str, ...] = ("--data-dir", "none")
    if request.param != "memory":
        flags = ("--engine", str(request.getfixturevalue(f"{request.param}_url")))
    return server_factory(*flags)


def new_key() -> str:
    return str(uuid.uuid4())


def publish(client: httpx.Client, key: str | None, body: Json, path: str = "/publish") -> Any:
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.post(path, json=body, headers=headers)


def cached(client: httpx.Client, channel: str) -> list[Any]:
    answer = client.get("/subscribe", params={"channels": channel, "timeout": 0})
    assert answer.status_code == 200, answer.text
    return [message["data"] for message in answer.json()["messages"]]


def replays_counted(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith('pushup_idempotent_replays_total{worker="all"}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no pushup_idempotent_replays_total in /metrics")


def test_a_retry_gets_the_first_answer_and_is_stored_once(node: ServerProcess) -> None:
    client = node.client()
    assert client.post("/channels", json={"name": "news"}).status_code == 201
    key, body = new_key(), {"channels": ["news"], "data": {"n": 1}}
    first = publish(client, key, body)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = publish(client, key, body)
    assert (again.status_code, again.content) == (201, first.content)
    assert again.headers["idempotent-replayed"] == "true"
    assert cached(client, "news") == [{"n": 1}]
    assert replays_counted(client) == 1
    # A new key is a new publication.
    assert publish(client, new_key(), body).json()["id"] != first.json()["id"]
    assert cached(client, "news") == [{"n": 1}, {"n": 1}]


def test_a_batch_retried_gets_the_same_ids(node: ServerProcess) -> None:
    client = node.client()
    a = client.post("/channels", json={"name": "a"}).json()["id"]
    client.post("/channels", json={"name": "b"})
    key = new_key()
    body = {"messages": [{"channels": [a, "b"], "data": n} for n in range(3)]}
    first = publish(client, key, body, "/publish/batch")
    assert first.status_code == 201, first.text
    # The same request, written otherwise: ids as strings, other spacing.
    items = ",".join(f'{{"channels":["{a}","b"],"data":{n}}}' for n in range(3))
    same = f'{{"messages":[ {items}]}}'
    again = client.post("/publish/batch", content=same, headers={"Idempotency-Key": key})
    assert (again.status_code, again.content) == (201, first.content), again.text
    assert cached(client, "b") == [0, 1, 2]


def test_the_key_with_another_request_is_refused(node: ServerProcess) -> None:
    client = node.client()
    client.post("/channels", json={"name": "news"})
    key = new_key()
    assert publish(client, key, {"channels": ["news"], "data": 1}).status_code == 201
    for body, path in (
        ({"channels": ["news"], "data": 2}, "/publish"),
        ({"messages": [{"channels": ["news"], "data": 1}]}, "/publish/batch"),
    ):
        refused = publish(client, key, body, path)
        assert_error(refused, 422, "idempotency_key_reused")
    assert cached(client, "news") == [1]
    assert errors_counted(client, "idempotency_key_reused") == 2


def test_an_error_is_not_kept(node: ServerProcess) -> None:
    client = node.client()
    key, body = new_key(), {"channels": ["later"], "data": 1}
    assert_error(
        publish(client, key, body), 404, "channel_not_found", extra=frozenset({"channels"})
    )
    client.post("/channels", json={"name": "later"})
    retried = publish(client, key, body)
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers
    assert cached(client, "later") == [1]


@pytest.mark.parametrize(
    ("key", "detail"),
    [
        ("", "1 to 255 characters"),
        ("k" * 256, "1 to 255 characters"),
        ("two words", "visible ASCII"),
        ("caf\xe9", "visible ASCII"),
    ],
)
def test_a_bad_key_is_a_400(server: ServerProcess, key: str, detail: str) -> None:
    client = server.client()
    client.post("/channels", json={"name": "news"})
    headers = {"Idempotency-Key": key.encode("latin-1")}
    answer = client.post("/publish", json={"channels": ["news"], "data": 1}, headers=headers)
    assert detail in assert_error(answer, 400, "invalid_idempotency_key")["detail"]
    assert cached(client, "news") == []


def test_a_window_of_zero_ignores_the_header(server_factory: ServerFactory) -> None:
    client = server_factory("--data-dir", "none", "--idempotency-window", "0").client()
    client.post("/channels", json={"name": "news"})
    for key in ("k", "k", "not checked"):
        assert publish(client, key, {"channels": ["news"], "data": 1}).status_code == 201
    assert cached(client, "news") == [1, 1, 1]


def test_retries_at_once_wait_for_the_first(server_factory: ServerFactory, tmp_path: Path) -> None:
    """With a journal a publication waits for its commit: the retries come meanwhile."""
    server = server_factory("--data-dir", str(tmp_path / "data"))
    server.client().post("/channels", json={"name": "news"})
    key, body = new_key(), {"channels": ["news"], "data": "once"}
    clients = [server.client() for _ in range(12)]
    with ThreadPoolExecutor(len(clients)) as pool:
        answers = list(pool.map(lambda c: publish(c, key, body), clients))
    assert [a.status_code for a in answers] == [201] * 12
    assert len({a.content for a in answers}) == 1
    assert sum("idempotent-replayed" not in a.headers for a in answers) == 1
    assert cached(server.client(), "news") == ["once"]


def test_a_retry_after_a_kill_and_restart_gets_the_first_answer(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "data")
    server = server_factory("--data-dir", data_dir)
    client = server.client()
    client.post("/channels", json={"name": "news"})
    key, body = new_key(), {"messages": [{"channels": ["news"], "data": n} for n in range(2)]}
    first = publish(client, key, body, "/publish/batch")
    assert first.status_code == 201, first.text
    kill(server)
    client = server_factory("--data-dir", data_dir).client()
    again = publish(client, key, body, "/publish/batch")
    assert (again.status_code, again.content) == (201, first.content)
    assert again.headers["idempotent-replayed"] == "true"
    assert cached(client, "news") == [0, 1]
    assert_error(
        publish(client, key, {"channels": ["news"], "data": 9}), 422, "idempotency_key_reused"
    )


def test_keys_are_scoped_to_the_publisher_key(
    server_factory: ServerFactory, redis_url: str
) -> None:
    """Two publishers with their own keys on one Redis never share an Idempotency-Key."""
    clients = [
        server_factory("--engine", redis_url, "--publisher-key", secret).client(
            headers={"Authorization": f"Bearer {secret}"}
        )
        for secret in ("first-publisher", "second-publisher")
    ]
    clients[0].post("/channels", json={"name": "news"})
    answers = [publish(c, "shared", {"channels": ["news"], "data": 1}) for c in clients]
    assert [a.status_code for a in answers] == [201, 201]
    assert answers[0].json()["id"] != answers[1].json()["id"]
    assert cached(clients[0], "news") == [1, 1]


def check_another_node_answers_the_retry(nodes: list[ServerProcess]) -> None:
    first, second = (node.client() for node in nodes)
    first.post("/channels", json={"name": "news"})
    wait_for(lambda: second.get("/channels/news").status_code == 200, what="the channel")
    key, body = new_key(), {"channels": ["news"], "data": "once"}
    answer = publish(first, key, body)
    assert answer.status_code == 201, answer.text
    again = publish(second, key, body)
    assert (again.status_code, again.content) == (201, answer.content)
    assert again.headers["idempotent-replayed"] == "true"
    # Both nodes at once, several times each: stored once.
    key = new_key()
    clients = [node.client() for node in nodes for _ in range(4)]
    with ThreadPoolExecutor(len(clients)) as pool:
        answers = list(pool.map(lambda c: publish(c, key, body), clients))
    assert [a.status_code for a in answers] == [201] * 8
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum("idempotent-replayed" not in a.headers for a in answers) == 1
    for client in (first, second):
        assert cached(client, "news") == ["once", "once"]


def test_another_redis_node_answers_the_retry(
    server_factory: ServerFactory, redis_url: str
) -> None:
    check_another_node_answers_the_retry([server_factory("--engine", redis_url) for _ in range(2)])


def test_another_nats_node_answers_the_retry(
    server_factory: ServerFactory, nats_cluster: list[NatsServer]
) -> None:
    check_another_node_answers_the_retry(nodes_on(server_factory, nats_cluster, 2))

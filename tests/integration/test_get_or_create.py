"""Get or create, on every engine: `POST /channels {"name", "exist_ok": true}` answers
201 with a new channel or 200 with the live one of that name, renewed, so an
application's start-up asks for its channels without counting `name_taken` errors."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.helpers import ServerProcess
from tests.integration.test_subscriber_api import assert_error


@pytest.fixture(params=["memory", "redis", "nats"])
def node(request: pytest.FixtureRequest, server_factory: ServerFactory) -> ServerProcess:
    flags: tuple[str, ...] = ("--data-dir", "none")
    if request.param != "memory":
        flags = ("--engine", str(request.getfixturevalue(f"{request.param}_url")))
    return server_factory(*flags)


def get_or_create(client: httpx.Client, name: str, **body: object) -> httpx.Response:
    return client.post("/channels", json={"name": name, "exist_ok": True, **body})


def errors_counted(client: httpx.Client, code: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        ours = line.startswith("pushup_errors_total{") and f'code="{code}"' in line
        if ours and ('worker="' not in line or 'worker="all"' in line):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_first_call_creates_and_the_next_ones_find_and_renew(node: ServerProcess) -> None:
    client = node.client()
    made = get_or_create(client, "room:1", ttl=30)
    assert made.status_code == 201, made.text
    found = get_or_create(client, "room:1", ttl=600)
    assert found.status_code == 200, found.text
    assert found.json()["id"] == made.json()["id"]
    assert found.json()["name"] == "room:1"
    # Renewed, with the TTL asked for this time.
    assert found.json()["expires_at"] >= made.json()["expires_at"] + 500
    assert errors_counted(client, "name_taken") == 0
    # Without exist_ok the name is still taken.
    assert_error(client.post("/channels", json={"name": "room:1"}), 409, "name_taken")


def test_a_closed_channel_is_made_anew(node: ServerProcess) -> None:
    client = node.client()
    first = get_or_create(client, "room:2").json()["id"]
    assert client.delete(f"/channels/{first}").status_code == 204
    again = get_or_create(client, "room:2")
    assert again.status_code == 201, again.text
    assert again.json()["id"] != first


def test_many_at_once_get_one_channel_and_one_of_them_made_it(node: ServerProcess) -> None:
    clients = [node.client() for _ in range(12)]
    with ThreadPoolExecutor(len(clients)) as pool:
        answers = list(pool.map(lambda c: get_or_create(c, "crowded"), clients))
    assert sorted(answer.status_code for answer in answers) == [200] * 11 + [201]
    assert len({answer.json()["id"] for answer in answers}) == 1


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"exist_ok": True}, "exist_ok needs a name"),
        ({"name": "x", "exist_ok": "yes"}, "exist_ok must be true or false"),
        ({"name": "x", "exist_ok": 1}, "exist_ok must be true or false"),
    ],
)
def test_bad_input_is_a_400(node: ServerProcess, body: dict[str, object], detail: str) -> None:
    answer = node.client().post("/channels", json=body)
    assert detail in assert_error(answer, 400, "invalid_body")["detail"]

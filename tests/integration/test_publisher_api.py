"""The publisher side of the HTTP API, and the generic error rules, against a real server.

Covers `POST /channels`, `POST /channels/{id}/renew`, `DELETE /channels/{id}`,
`GET /channels/{id}`, `POST /publish`, `POST /publish/batch`, publisher access control
(key or loopback-only) and the errors every endpoint shares (bad JSON, wrong types,
unknown fields, 413, 404, 405). Most tests share one module-scoped server and work on
channels of their own, so they do not interfere.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.helpers import ServerProcess, start_server, wait_for

ServerFactory = Callable[..., ServerProcess]
Json = dict[str, Any]

MAX_ID = 2**53
MIB = 1024 * 1024
KEY = "s3cret-publisher-key"
DEFAULT_CHANNEL_TTL = 3600.0
# Slack for comparing the server's clock readings with ours (same machine, same clock).
CLOCK_SLACK = 0.05
ERROR_FIELDS = {"error", "detail"}
CHANNEL_FIELDS = {"id", "name", "expires_at", "message_ttl", "max_messages"}
INFO_FIELDS = CHANNEL_FIELDS | {"subscribers", "messages", "last_message_id"}
PUBLISHED_FIELDS = {"id", "time", "channels"}


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api() -> Iterator[ServerProcess]:
    """One server on its defaults (no publisher key) for the whole module."""
    server = start_server()
    yield server
    server.stop_checked()


@pytest.fixture(scope="module")
def keyed() -> Iterator[ServerProcess]:
    """One server that requires `Authorization: Bearer KEY` from publishers."""
    server = start_server("--publisher-key", KEY)
    yield server
    server.stop_checked()


@pytest.fixture(scope="module")
def pub(api: ServerProcess) -> httpx.Client:
    """The module's client (shared, also by poll threads: creating clients is slow)."""
    return api.client()


@pytest.fixture(scope="module")
def kpub(keyed: ServerProcess) -> httpx.Client:
    """A client of the keyed server that sends no key unless a request adds one."""
    return keyed.client()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    """Threads for parked polls (each poll has its own connection)."""
    executor = ThreadPoolExecutor(max_workers=16)
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


# -- helpers -----------------------------------------------------------------------------


def assert_error(
    response: httpx.Response, status: int, code: str, *, extra: set[str] | None = None
) -> Json:
    """`response` is the JSON error `code` with `status`.

    The body has exactly `error`, `detail` and the `extra` fields; with `extra=None` it
    may also carry a `channels` field (the contract leaves that open there).
    """
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers.get("content-type", "").startswith("application/json")
    body = response.json()
    assert isinstance(body, dict), body
    assert body.get("error") == code, body
    assert isinstance(body.get("detail"), str), body
    assert body["detail"], body
    if extra is None:
        assert set(body) - {"channels"} == ERROR_FIELDS, body
    else:
        assert set(body) == ERROR_FIELDS | extra, body
    return body


def assert_healthy(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def create(client: httpx.Client, **body: Any) -> Json:
    response = client.post("/channels", json=body) if body else client.post("/channels")
    assert response.status_code == 201, response.text
    result: Json = response.json()
    return result


def info(client: httpx.Client, ref: int | str) -> Json:
    response = client.get(f"/channels/{path(ref)}")
    assert response.status_code == 200, response.text
    result: Json = response.json()
    return result


def publish(client: httpx.Client, channels: list[int | str], data: Any = None) -> Json:
    response = client.post("/publish", json={"channels": channels, "data": data})
    assert response.status_code == 201, response.text
    result: Json = response.json()
    return result


def path(ref: int | str) -> str:
    """A channel id or name as one percent-encoded path segment."""
    return quote(str(ref), safe="")


def as_text(refs: list[Any]) -> list[str]:
    """Channel refs compared by their text: `17` and `"17"` name the same channel."""
    return [str(ref) for ref in refs]


def park(
    pool: ThreadPoolExecutor, client: httpx.Client, channels: list[int | str], **params: Any
) -> Future[httpx.Response]:
    """Start a long poll in a thread; the future holds its response."""
    query = {"channels": ",".join(map(str, channels)), "timeout": 20, **params}
    return pool.submit(client.get, "/subscribe", params=query, timeout=60.0)


def wait_subscribers(client: httpx.Client, ref: int | str, count: int) -> None:
    wait_for(
        lambda: info(client, ref)["subscribers"] == count,
        what=f"{count} parked polls on channel {ref}",
    )


def poll_now(client: httpx.Client, channels: list[int | str], **params: Any) -> Json:
    query = {"channels": ",".join(map(str, channels)), "timeout": 0, **params}
    response = client.get("/subscribe", params=query)
    assert response.status_code == 200, response.text
    result: Json = response.json()
    return result


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


# -- POST /channels ----------------------------------------------------------------------


def test_create_without_body(pub: httpx.Client) -> None:
    before = time.time()
    response = pub.post("/channels")
    after = time.time()
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == CHANNEL_FIELDS
    assert isinstance(body["id"], int) and not isinstance(body["id"], bool)
    assert 0 < body["id"] < MAX_ID
    assert body["name"] is None
    assert isinstance(body["expires_at"], float)
    assert before + DEFAULT_CHANNEL_TTL - CLOCK_SLACK <= body["expires_at"]
    assert body["expires_at"] <= after + DEFAULT_CHANNEL_TTL + CLOCK_SLACK


def test_create_with_empty_object(pub: httpx.Client) -> None:
    body = create(pub)
    response = pub.post("/channels", json={})
    assert response.status_code == 201
    second = response.json()
    assert set(second) == CHANNEL_FIELDS
    assert second["name"] is None
    assert second["id"] > body["id"]


@pytest.mark.parametrize("ttl", [30, 0.5, 1234.25, 86400 * 365])
def test_create_with_ttl(pub: httpx.Client, ttl: float) -> None:
    before = time.time()
    body = create(pub, ttl=ttl)
    after = time.time()
    assert set(body) == CHANNEL_FIELDS
    assert before + ttl - CLOCK_SLACK <= body["expires_at"] <= after + ttl + CLOCK_SLACK


def test_create_accepts_a_long_ttl(pub: httpx.Client) -> None:
    # The contract only asks for a number > 0; twenty years is a "never expires" channel.
    ttl = 20 * 365 * 86400.0
    before = time.time()
    body = create(pub, ttl=ttl)
    after = time.time()
    assert before + ttl - CLOCK_SLACK <= body["expires_at"] <= after + ttl + CLOCK_SLACK


def test_create_with_name_and_ttl(pub: httpx.Client) -> None:
    name = unique("tag:c++")
    before = time.time()
    body = create(pub, name=name, ttl=60)
    after = time.time()
    assert set(body) == CHANNEL_FIELDS
    assert body["name"] == name
    assert before + 60 - CLOCK_SLACK <= body["expires_at"] <= after + 60 + CLOCK_SLACK
    assert info(pub, name)["id"] == body["id"]
    assert info(pub, body["id"])["name"] == name


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "x" * 200,
        "é" * 200,
        "tag:c++",
        "12a",
        "a12",
        "-1",
        "1.5",
        "1 2",
        " ",
        "a/b",
        "100% sure?",
        "日本語のチャンネル",
        "emoji 🎉",
    ],
)
def test_create_accepts_valid_names(pub: httpx.Client, name: str) -> None:
    body = create(pub, name=name)
    assert body["name"] == name
    assert info(pub, name)["id"] == body["id"]
    # Free the name again for anyone else on this shared server.
    assert pub.delete(f"/channels/{path(name)}").status_code == 204


@pytest.mark.parametrize(
    "name",
    ["", "x" * 201, "é" * 201, "0", "123", "9" * 30, "a,b", ",", "tag,c++"],
    ids=["empty", "201-chars", "201-unicode-chars", "zero", "digits", "long-digits", "comma",
         "only-comma", "comma-inside"],
)  # fmt: skip
def test_create_rejects_invalid_names(pub: httpx.Client, name: str) -> None:
    assert_error(pub.post("/channels", json={"name": name}), 400, "invalid_body")
    assert_healthy(pub)


@pytest.mark.parametrize("name", [17, 1.5, True, ["a"], {"a": 1}])
def test_create_rejects_non_string_names(pub: httpx.Client, name: Any) -> None:
    assert_error(pub.post("/channels", json={"name": name}), 400, "invalid_body")


def test_name_taken_is_409(pub: httpx.Client) -> None:
    name = unique("taken")
    first = create(pub, name=name)
    assert_error(pub.post("/channels", json={"name": name}), 409, "name_taken", extra=set())
    assert_error(
        pub.post("/channels", json={"name": name, "ttl": 5}), 409, "name_taken", extra=set()
    )
    # The live channel is untouched.
    assert info(pub, name)["id"] == first["id"]


def test_name_free_again_after_close(pub: httpx.Client) -> None:
    name = unique("reuse-after-close")
    first = create(pub, name=name)
    publish(pub, [name], "for the first channel only")
    assert pub.delete(f"/channels/{path(name)}").status_code == 204
    second = create(pub, name=name)
    assert second["name"] == name
    assert second["id"] != first["id"]
    # The name now means the new channel, which inherits nothing from the old one.
    state = info(pub, name)
    assert state["id"] == second["id"]
    assert state["messages"] == 0 and state["last_message_id"] is None
    assert poll_now(pub, [name])["messages"] == []
    assert_error(pub.get(f"/channels/{first['id']}"), 404, "channel_not_found")


def test_name_free_again_after_expiry(pub: httpx.Client) -> None:
    name = unique("reuse-after-expiry")
    first = create(pub, name=name, ttl=0.2)

    def recreate() -> Json | None:
        response = pub.post("/channels", json={"name": name})
        if response.status_code == 409:
            return None
        assert response.status_code == 201, response.text
        body: Json = response.json()
        return body

    second = wait_for(recreate, timeout=10.0, what="the expired channel's name to be free")
    assert second["id"] != first["id"]
    assert_error(pub.get(f"/channels/{first['id']}"), 404, "channel_not_found")


def test_ids_positive_increasing_never_reused(pub: httpx.Client) -> None:
    first = [create(pub)["id"] for _ in range(5)]
    for channel_id in first:
        assert pub.delete(f"/channels/{channel_id}").status_code == 204
    second = [create(pub, ttl=1)["id"] for _ in range(5)]
    ids = first + second
    assert all(isinstance(i, int) and 0 < i < MAX_ID for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_ids_never_reused_across_restart(server_factory: ServerFactory) -> None:
    before = server_factory()
    old = before.client()
    old_ids = [create(old)["id"] for _ in range(3)]
    old_ids.append(create(old, name="survivor")["id"])
    assert before.stop() == 0
    after = server_factory()
    new = after.client()
    new_ids = [create(new)["id"] for _ in range(3)]
    # The name lived only in the old process's memory.
    new_ids.append(create(new, name="survivor")["id"])
    assert all(0 < i < MAX_ID for i in old_ids + new_ids)
    assert min(new_ids) > max(old_ids)
    assert new_ids == sorted(new_ids)


@pytest.mark.parametrize(
    "ttl",
    ["10", "", True, False, 0, 0.0, -1, -0.5, [1], {"s": 1}],
    ids=["string", "empty-string", "true", "false", "zero", "zero-float", "negative",
         "negative-float", "list", "object"],
)  # fmt: skip
def test_create_rejects_bad_ttl(pub: httpx.Client, ttl: Any) -> None:
    assert_error(pub.post("/channels", json={"ttl": ttl}), 400, "invalid_body")
    assert_error(pub.post("/channels", json={"ttl": ttl, "name": unique("t")}), 400, "invalid_body")
    assert_healthy(pub)


def test_create_rejects_unknown_fields(pub: httpx.Client) -> None:
    assert_error(pub.post("/channels", json={"ttl": 5, "colour": "red"}), 400, "invalid_body")
    assert_error(pub.post("/channels", json={"id": 17}), 400, "invalid_body")


@pytest.mark.parametrize("body", [b"{", b"{'ttl': 5}", b"nope", b'{"ttl": 5,}', b"\xff\xfe"])
def test_create_rejects_malformed_json(pub: httpx.Client, body: bytes) -> None:
    response = pub.post("/channels", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "invalid_json")
    assert_healthy(pub)


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"3", b"null", b"true"])
def test_create_rejects_non_object_body(pub: httpx.Client, body: bytes) -> None:
    response = pub.post("/channels", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "invalid_body")


# -- POST /channels/{id}/renew -------------------------------------------------------------


def test_renew_without_body_uses_channel_ttl(pub: httpx.Client) -> None:
    channel = create(pub, ttl=500, name=unique("renew"))
    before = time.time()
    response = pub.post(f"/channels/{channel['id']}/renew")
    after = time.time()
    assert response.status_code == 200
    body = response.json()
    assert set(body) == CHANNEL_FIELDS
    assert body["id"] == channel["id"]
    assert body["name"] == channel["name"]
    assert before + 500 - CLOCK_SLACK <= body["expires_at"] <= after + 500 + CLOCK_SLACK
    response = pub.post(f"/channels/{channel['id']}/renew", json={})
    assert response.status_code == 200
    assert set(response.json()) == CHANNEL_FIELDS


def test_renew_ttl_becomes_the_channels_ttl(pub: httpx.Client) -> None:
    channel = create(pub, ttl=1000)
    ref = channel["id"]
    before = time.time()
    response = pub.post(f"/channels/{ref}/renew", json={"ttl": 40})
    after = time.time()
    assert response.status_code == 200
    body = response.json()
    assert set(body) == CHANNEL_FIELDS
    assert before + 40 - CLOCK_SLACK <= body["expires_at"] <= after + 40 + CLOCK_SLACK
    # A later publication renews with the new TTL, not the one given at creation.
    published = publish(pub, [ref], "x")
    assert abs(info(pub, ref)["expires_at"] - (published["time"] + 40)) < CLOCK_SLACK
    # So does a later renew without a ttl.
    before = time.time()
    renewed = pub.post(f"/channels/{ref}/renew").json()
    after = time.time()
    assert before + 40 - CLOCK_SLACK <= renewed["expires_at"] <= after + 40 + CLOCK_SLACK
    # A longer TTL too.
    pub.post(f"/channels/{ref}/renew", json={"ttl": 7200.5})
    published = publish(pub, [ref], "y")
    assert abs(info(pub, ref)["expires_at"] - (published["time"] + 7200.5)) < CLOCK_SLACK


def test_renew_by_name(pub: httpx.Client) -> None:
    name = unique("tag:c++/renew")
    channel = create(pub, name=name, ttl=10)
    response = pub.post(f"/channels/{path(name)}/renew", json={"ttl": 900})
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == channel["id"] and body["name"] == name
    assert body["expires_at"] > channel["expires_at"] + 800


def test_renew_unknown_closed_or_expired_is_404(pub: httpx.Client) -> None:
    unknown = pub.post(f"/channels/{MAX_ID - 1}/renew")
    assert_error(unknown, 404, "channel_not_found")
    assert_error(pub.post(f"/channels/{path(unique('no such'))}/renew"), 404, "channel_not_found")
    closed = create(pub)
    assert pub.delete(f"/channels/{closed['id']}").status_code == 204
    assert_error(pub.post(f"/channels/{closed['id']}/renew"), 404, "channel_not_found")
    expired = create(pub, ttl=0.2, name=unique("expiring"))
    wait_for(
        lambda: pub.get(f"/channels/{expired['id']}").status_code == 404,
        what="the channel to expire",
    )
    assert_error(pub.post(f"/channels/{expired['id']}/renew"), 404, "channel_not_found")
    assert_error(
        pub.post(f"/channels/{path(expired['name'])}/renew", json={"ttl": 50}),
        404,
        "channel_not_found",
    )


@pytest.mark.parametrize(
    "body", [{"ttl": "5"}, {"ttl": 0}, {"ttl": -3}, {"ttl": True}, {"ttl": None}, {"name": "x"},
             {"ttl": 5, "extra": 1}, [], 7],
    ids=["ttl-string", "ttl-zero", "ttl-negative", "ttl-bool", "ttl-null", "name-field",
         "unknown-field", "array", "number"],
)  # fmt: skip
def test_renew_rejects_bad_bodies(pub: httpx.Client, body: Any) -> None:
    channel = create(pub, ttl=100)
    assert_error(pub.post(f"/channels/{channel['id']}/renew", json=body), 400, "invalid_body")
    # Nothing changed.
    assert info(pub, channel["id"])["expires_at"] == channel["expires_at"]


def test_renew_rejects_malformed_json(pub: httpx.Client) -> None:
    channel = create(pub)
    response = pub.post(f"/channels/{channel['id']}/renew", content=b'{"ttl": ')
    assert_error(response, 400, "invalid_json")


# -- DELETE /channels/{id} -----------------------------------------------------------------


def test_delete_then_everything_naming_it_is_404(pub: httpx.Client) -> None:
    name = unique("doomed")
    channel = create(pub, name=name)
    other = create(pub)
    response = pub.delete(f"/channels/{channel['id']}")
    assert response.status_code == 204
    assert response.content == b""
    for ref in (channel["id"], name):
        assert_error(pub.get(f"/channels/{path(ref)}"), 404, "channel_not_found")
        assert_error(pub.delete(f"/channels/{path(ref)}"), 404, "channel_not_found")
        assert_error(pub.post(f"/channels/{path(ref)}/renew"), 404, "channel_not_found")
        response = pub.post("/publish", json={"channels": [ref], "data": 1})
        body = assert_error(response, 404, "channel_not_found", extra={"channels"})
        assert as_text(body["channels"]) == [str(ref)]
        response = pub.get("/subscribe", params={"channels": f"{other['id']},{ref}", "timeout": 0})
        body = assert_error(response, 404, "channel_not_found", extra={"channels"})
        assert as_text(body["channels"]) == [str(ref)]


def test_delete_by_name(pub: httpx.Client) -> None:
    name = unique("a/b c")
    channel = create(pub, name=name)
    assert pub.delete(f"/channels/{path(name)}").status_code == 204
    assert_error(pub.get(f"/channels/{channel['id']}"), 404, "channel_not_found")


def test_delete_unknown_is_404(pub: httpx.Client) -> None:
    assert_error(pub.delete(f"/channels/{MAX_ID - 2}"), 404, "channel_not_found")
    assert_error(pub.delete(f"/channels/{path(unique('ghost'))}"), 404, "channel_not_found")


def test_delete_answers_parked_subscribers_with_410(
    pub: httpx.Client, pool: ThreadPoolExecutor
) -> None:
    name = unique("closing")
    a = create(pub, name=name)["id"]
    b = create(pub)["id"]
    c = create(pub)["id"]
    on_a_by_name_and_b = park(pool, pub, [name, b])
    on_a = park(pool, pub, [a])
    on_b_and_c = park(pool, pub, [b, c])
    wait_subscribers(pub, a, 2)
    wait_subscribers(pub, b, 2)
    wait_subscribers(pub, c, 1)

    assert pub.delete(f"/channels/{a}").status_code == 204
    for future in (on_a_by_name_and_b, on_a):
        response = future.result(timeout=30)
        body = assert_error(response, 410, "channel_closed", extra={"channels"})
        assert body["channels"] == [a]
    # A poll that did not subscribe to the closed channel stays parked, and still works.
    wait_subscribers(pub, b, 1)
    assert info(pub, c)["subscribers"] == 1
    assert not on_b_and_c.done()
    sent = publish(pub, [c], "still here")
    answer = on_b_and_c.result(timeout=30)
    assert answer.status_code == 200
    assert [m["id"] for m in answer.json()["messages"]] == [sent["id"]]


def test_expiry_answers_parked_subscribers_with_410(
    pub: httpx.Client, pool: ThreadPoolExecutor
) -> None:
    a = create(pub)["id"]
    b = create(pub)["id"]
    parked = park(pool, pub, [b, a])
    wait_subscribers(pub, a, 1)
    # Only now give it a short life, so it cannot expire before the poll parks.
    assert pub.post(f"/channels/{a}/renew", json={"ttl": 0.2}).status_code == 200
    body = assert_error(parked.result(timeout=30), 410, "channel_closed", extra={"channels"})
    assert body["channels"] == [a]
    assert_error(pub.get(f"/channels/{a}"), 404, "channel_not_found")
    assert info(pub, b)["subscribers"] == 0


# -- GET /channels/{id} --------------------------------------------------------------------


def test_channel_info_fields(pub: httpx.Client) -> None:
    name = unique("info")
    channel = create(pub, name=name, ttl=300)
    body = info(pub, channel["id"])
    assert body == {
        "id": channel["id"],
        "name": name,
        "expires_at": channel["expires_at"],
        "message_ttl": 300,  # the server's limits
        "max_messages": 1000,
        "subscribers": 0,
        "messages": 0,
        "last_message_id": None,
    }
    assert info(pub, name) == body
    first = publish(pub, [channel["id"]], 1)
    second = publish(pub, [name], 2)
    body = info(pub, channel["id"])
    assert set(body) == INFO_FIELDS
    assert body["messages"] == 2
    assert body["subscribers"] == 0
    assert body["last_message_id"] == second["id"]
    assert isinstance(body["last_message_id"], str)
    assert int(second["id"]) > int(first["id"])
    assert body["expires_at"] == pytest.approx(second["time"] + 300, abs=CLOCK_SLACK)


def test_channel_info_counts_parked_polls(pub: httpx.Client, pool: ThreadPoolExecutor) -> None:
    a = create(pub)["id"]
    b = create(pub)["id"]
    polls = [park(pool, pub, [a]), park(pool, pub, [a]), park(pool, pub, [a, b])]
    wait_subscribers(pub, a, 3)
    assert info(pub, b)["subscribers"] == 1
    publish(pub, [b], "wakes one")
    assert polls[2].result(timeout=30).status_code == 200
    assert info(pub, a)["subscribers"] == 2
    assert info(pub, b)["subscribers"] == 0
    publish(pub, [a], "wakes the rest")
    for poll in polls[:2]:
        assert poll.result(timeout=30).status_code == 200
    assert info(pub, a)["subscribers"] == 0
    # Polls answered at once (cached messages, or timeout=0) never count.
    poll_now(pub, [a])
    assert info(pub, a)["subscribers"] == 0


def test_channel_info_keeps_last_message_id_after_messages_expire(
    server_factory: ServerFactory,
) -> None:
    server = server_factory("--message-ttl", "0.3")
    client = server.client()
    channel = create(client)["id"]
    sent = publish(client, [channel], "short-lived")
    assert info(client, channel)["last_message_id"] == sent["id"]
    wait_for(lambda: info(client, channel)["messages"] == 0, what="the message to expire")
    body = info(client, channel)
    assert body["last_message_id"] == sent["id"]
    assert body["messages"] == 0


def test_reads_are_not_activity(pub: httpx.Client) -> None:
    channel = create(pub, ttl=100)
    ref = channel["id"]
    poll_now(pub, [ref])
    assert info(pub, ref)["expires_at"] == channel["expires_at"]
    assert info(pub, ref)["expires_at"] == channel["expires_at"]


def test_channel_info_unknown_is_404(pub: httpx.Client) -> None:
    assert_error(pub.get(f"/channels/{MAX_ID - 3}"), 404, "channel_not_found")
    assert_error(pub.get(f"/channels/{path(unique('nobody'))}"), 404, "channel_not_found")


@pytest.mark.parametrize(
    "name",
    [
        "tag:c++",
        "a/b",
        "a/../b",
        "x y",
        "100%",
        "q?x=1#frag",
        "日本語",
        "café ☕",
        "%2F",
        "+ +",
        "tab\there;new\nline",
    ],
)
def test_channel_names_in_paths_are_percent_encoded(pub: httpx.Client, name: str) -> None:
    name = f"{name}|{time.monotonic_ns()}"
    channel = create(pub, name=name)
    ref = path(name)
    got = pub.get(f"/channels/{ref}")
    assert got.status_code == 200, got.text
    assert got.json()["id"] == channel["id"]
    assert got.json()["name"] == name
    renewed = pub.post(f"/channels/{ref}/renew", json={"ttl": 99})
    assert renewed.status_code == 200
    assert renewed.json()["id"] == channel["id"]
    sent = publish(pub, [name], {"to": name})
    assert sent["channels"] == [channel["id"]]
    polled = poll_now(pub, [name])
    assert [m["id"] for m in polled["messages"]] == [sent["id"]]
    assert polled["messages"][0]["channels"] == [channel["id"]]
    assert pub.delete(f"/channels/{ref}").status_code == 204
    assert_error(pub.get(f"/channels/{ref}"), 404, "channel_not_found")


def test_name_with_plus_works_unencoded_in_path(pub: httpx.Client) -> None:
    name = f"tag:c++{time.monotonic_ns()}"
    channel = create(pub, name=name)
    # `+` and `:` are literal in a path; only the query string reads `+` as a space.
    assert pub.get(f"/channels/{name}").json()["id"] == channel["id"]


# -- POST /publish -------------------------------------------------------------------------


def test_publish_result(pub: httpx.Client) -> None:
    name = unique("tag:c++")
    a = create(pub)["id"]
    b = create(pub, name=name)["id"]
    before = time.time()
    response = pub.post("/publish", json={"channels": [a, name], "data": {"hello": "world"}})
    after = time.time()
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == PUBLISHED_FIELDS
    assert isinstance(body["id"], str) and body["id"].isdigit()
    assert 0 < int(body["id"]) < MAX_ID
    assert isinstance(body["time"], float)
    assert before - CLOCK_SLACK <= body["time"] <= after + CLOCK_SLACK
    assert sorted(body["channels"]) == sorted([a, b])
    assert all(isinstance(c, int) for c in body["channels"])
    assert info(pub, a)["last_message_id"] == body["id"]
    assert info(pub, b)["last_message_id"] == body["id"]


def test_publish_by_id_as_string(pub: httpx.Client) -> None:
    a = create(pub)["id"]
    body = publish(pub, [str(a)], "x")
    assert body["channels"] == [a]


def test_publish_ids_increase(pub: httpx.Client) -> None:
    a = create(pub)["id"]
    b = create(pub)["id"]
    sent = [publish(pub, [[a], [b], [a, b]][i % 3], i) for i in range(20)]
    ids = [int(m["id"]) for m in sent]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    times = [m["time"] for m in sent]
    assert times == sorted(times)


@pytest.mark.parametrize(
    "data",
    [None, 0, -1.5, 10**15, "text", "ünïcödé 🎉 \"quoted\" \\ \n", True, False, [], {},
     [1, "a", None, [2]], {"nested": {"x": [1, 2, {"y": None}]}, "k": "v"}],
)  # fmt: skip
def test_publish_any_json_data(pub: httpx.Client, data: Any) -> None:
    a = create(pub)["id"]
    sent = publish(pub, [a], data)
    polled = poll_now(pub, [a])
    assert polled["messages"] == [
        {"id": sent["id"], "time": sent["time"], "channels": [a], "data": data}
    ]


def test_publish_unknown_channel_is_404_and_publishes_nothing(pub: httpx.Client) -> None:
    a = create(pub)["id"]
    closed = create(pub)["id"]
    assert pub.delete(f"/channels/{closed}").status_code == 204
    ghost = unique("ghost")
    response = pub.post("/publish", json={"channels": [a, MAX_ID - 5, ghost, closed], "data": 1})
    body = assert_error(response, 404, "channel_not_found", extra={"channels"})
    assert as_text(body["channels"]) == as_text([MAX_ID - 5, ghost, closed])
    state = info(pub, a)
    assert state["messages"] == 0
    assert state["last_message_id"] is None
    assert poll_now(pub, [a])["messages"] == []


def test_publish_is_activity_that_renews_expiry(pub: httpx.Client) -> None:
    channel = create(pub, ttl=100)
    ref = channel["id"]
    sent = publish(pub, [ref], "x")
    expires_at = info(pub, ref)["expires_at"]
    assert expires_at == pytest.approx(sent["time"] + 100, abs=CLOCK_SLACK)
    assert expires_at >= channel["expires_at"]


BAD_PUBLICATIONS: list[tuple[str, Callable[[int], Any]]] = [
    ("missing-channels", lambda c: {"data": 1}),
    ("missing-data", lambda c: {"channels": [c]}),
    ("empty-channels", lambda c: {"channels": [], "data": 1}),
    ("channels-string", lambda c: {"channels": str(c), "data": 1}),
    ("channels-int", lambda c: {"channels": c, "data": 1}),
    ("channels-null", lambda c: {"channels": None, "data": 1}),
    ("channel-bool", lambda c: {"channels": [c, True], "data": 1}),
    ("channel-float", lambda c: {"channels": [c, 1.5], "data": 1}),
    ("channel-object", lambda c: {"channels": [c, {"id": c}], "data": 1}),
    ("channel-null", lambda c: {"channels": [c, None], "data": 1}),
    ("channel-list", lambda c: {"channels": [[c]], "data": 1}),
    ("duplicate", lambda c: {"channels": [c, c], "data": 1}),
    ("duplicate-unknown", lambda c: {"channels": ["nope", "nope"], "data": 1}),
    ("bad-name-comma", lambda c: {"channels": [c, "a,b"], "data": 1}),
    ("bad-name-empty", lambda c: {"channels": [c, ""], "data": 1}),
    ("unknown-field", lambda c: {"channels": [c], "data": 1, "ttl": 5}),
    ("array-body", lambda c: [c]),
    ("string-body", lambda c: "x"),
    ("null-body", lambda c: None),
]


@pytest.mark.parametrize(
    "make_body", [make for _, make in BAD_PUBLICATIONS], ids=[n for n, _ in BAD_PUBLICATIONS]
)
def test_publish_rejects_bad_bodies(pub: httpx.Client, make_body: Callable[[int], Any]) -> None:
    a = create(pub)["id"]
    # Sent as raw bytes: httpx would send no body at all for `json=None`.
    body = json.dumps(make_body(a)).encode()
    response = pub.post("/publish", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "invalid_body", extra=set())
    assert info(pub, a)["messages"] == 0
    assert_healthy(pub)


@pytest.mark.parametrize("body", [b"", b"{", b'{"channels": [1], "data": }', b"{channels: [1]}"])
def test_publish_rejects_malformed_json(pub: httpx.Client, body: bytes) -> None:
    response = pub.post("/publish", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "invalid_json", extra=set())
    assert_healthy(pub)


# -- POST /publish/batch -------------------------------------------------------------------


def test_batch_publishes_in_item_order(pub: httpx.Client) -> None:
    name = unique("batch")
    a = create(pub)["id"]
    b = create(pub, name=name)["id"]
    items = [
        {"channels": [a], "data": "for a"},
        {"channels": [name], "data": {"for": "b"}},
        {"channels": [a, b], "data": [1, 2]},
        {"channels": [b], "data": None},
    ]
    before = time.time()
    response = pub.post("/publish/batch", json={"messages": items})
    after = time.time()
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"messages"}
    results = body["messages"]
    assert len(results) == len(items)
    for result in results:
        assert set(result) == PUBLISHED_FIELDS
        assert isinstance(result["id"], str) and 0 < int(result["id"]) < MAX_ID
        assert before - CLOCK_SLACK <= result["time"] <= after + CLOCK_SLACK
    ids = [int(r["id"]) for r in results]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [r["time"] for r in results] == sorted(r["time"] for r in results)
    assert [sorted(r["channels"]) for r in results] == [[a], [b], sorted([a, b]), [b]]
    on_a = poll_now(pub, [a])["messages"]
    assert [(m["id"], m["data"]) for m in on_a] == [
        (results[0]["id"], "for a"),
        (results[2]["id"], [1, 2]),
    ]
    on_b = poll_now(pub, [b])["messages"]
    assert [(m["id"], m["data"]) for m in on_b] == [
        (results[1]["id"], {"for": "b"}),
        (results[2]["id"], [1, 2]),
        (results[3]["id"], None),
    ]


def test_batch_of_1000_items(pub: httpx.Client) -> None:
    a = create(pub)["id"]
    items = [{"channels": [a], "data": i} for i in range(1000)]
    response = pub.post("/publish/batch", json={"messages": items})
    assert response.status_code == 201
    results = response.json()["messages"]
    assert len(results) == 1000
    ids = [int(r["id"]) for r in results]
    assert ids == sorted(ids) and len(set(ids)) == 1000
    state = info(pub, a)
    assert state["messages"] == 1000
    assert state["last_message_id"] == results[-1]["id"]
    assert [m["data"] for m in poll_now(pub, [a])["messages"]] == list(range(1000))


def test_batch_over_1000_items_is_400_and_publishes_nothing(pub: httpx.Client) -> None:
    a = create(pub)["id"]
    items = [{"channels": [a], "data": i} for i in range(1001)]
    response = pub.post("/publish/batch", json={"messages": items})
    assert_error(response, 400, "invalid_body", extra=set())
    assert info(pub, a)["messages"] == 0


def test_batch_unknown_channel_is_404_and_publishes_nothing(pub: httpx.Client) -> None:
    a = create(pub)["id"]
    ghost = unique("ghost")
    items = [
        {"channels": [a], "data": 1},
        {"channels": [a, ghost], "data": 2},
        {"channels": [a], "data": 3},
    ]
    response = pub.post("/publish/batch", json={"messages": items})
    body = assert_error(response, 404, "channel_not_found", extra={"channels"})
    assert as_text(body["channels"]) == [ghost]
    state = info(pub, a)
    assert state["messages"] == 0 and state["last_message_id"] is None


def test_batch_404_lists_every_unknown_channel(pub: httpx.Client) -> None:
    a = create(pub)["id"]
    first, second = unique("ghost-1"), unique("ghost-2")
    items = [
        {"channels": [a, first], "data": 1},
        {"channels": [a], "data": 2},
        {"channels": [second, a], "data": 3},
    ]
    response = pub.post("/publish/batch", json={"messages": items})
    body = assert_error(response, 404, "channel_not_found", extra={"channels"})
    assert sorted(as_text(body["channels"])) == sorted([first, second])
    assert info(pub, a)["messages"] == 0


BAD_BATCHES: list[tuple[str, Callable[[int], Any]]] = [
    ("missing-messages", lambda c: {}),
    ("empty-messages", lambda c: {"messages": []}),
    ("messages-object", lambda c: {"messages": {"channels": [c], "data": 1}}),
    ("messages-null", lambda c: {"messages": None}),
    ("item-number", lambda c: {"messages": [{"channels": [c], "data": 1}, 1]}),
    (
        "item-missing-data",
        lambda c: {"messages": [{"channels": [c], "data": 1}, {"channels": [c]}]},
    ),
    ("item-missing-channels", lambda c: {"messages": [{"channels": [c], "data": 1}, {"data": 1}]}),
    ("item-empty-channels", lambda c: {"messages": [{"channels": [], "data": 1}]}),
    ("item-duplicate-channels", lambda c: {"messages": [{"channels": [c, c], "data": 1}]}),
    ("item-bad-channel", lambda c: {"messages": [{"channels": [c, False], "data": 1}]}),
    ("item-unknown-field", lambda c: {"messages": [{"channels": [c], "data": 1, "x": 0}]}),
    ("unknown-field", lambda c: {"messages": [{"channels": [c], "data": 1}], "x": 0}),
    ("array-body", lambda c: [{"channels": [c], "data": 1}]),
]


@pytest.mark.parametrize(
    "make_body", [make for _, make in BAD_BATCHES], ids=[n for n, _ in BAD_BATCHES]
)
def test_batch_rejects_bad_bodies(pub: httpx.Client, make_body: Callable[[int], Any]) -> None:
    a = create(pub)["id"]
    assert_error(pub.post("/publish/batch", json=make_body(a)), 400, "invalid_body", extra=set())
    assert info(pub, a)["messages"] == 0
    assert_healthy(pub)


def test_batch_rejects_malformed_json(pub: httpx.Client) -> None:
    response = pub.post("/publish/batch", content=b'{"messages": [')
    assert_error(response, 400, "invalid_json", extra=set())


# -- publisher access: key ---------------------------------------------------------------

# (method, path, body, success status); `{c}` is a channel made for the test.
PUBLISHER_CALLS: list[tuple[str, str, Any, int]] = [
    ("POST", "/channels", None, 201),
    ("POST", "/channels", {"ttl": 10}, 201),
    ("POST", "/channels/{c}/renew", None, 200),
    ("GET", "/channels/{c}", None, 200),
    ("POST", "/publish", {"channels": ["{c}"], "data": 1}, 201),
    ("POST", "/publish/batch", {"messages": [{"channels": ["{c}"], "data": 1}]}, 201),
    ("DELETE", "/channels/{c}", None, 204),
]
CALL_IDS = ["create", "create-ttl", "renew", "info", "publish", "batch", "delete"]


def _fill(value: Any, channel: int) -> Any:
    if value == "{c}":
        return channel
    if isinstance(value, list):
        return [_fill(v, channel) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, channel) for k, v in value.items()}
    return value


def call(
    client: httpx.Client, method: str, url: str, body: Any, channel: int, **kwargs: Any
) -> httpx.Response:
    url = url.replace("{c}", str(channel))
    if body is None:
        return client.request(method, url, **kwargs)
    return client.request(method, url, json=_fill(body, channel), **kwargs)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize(("method", "url", "body", "status"), PUBLISHER_CALLS, ids=CALL_IDS)
def test_publisher_key_required_on_every_publisher_endpoint(
    kpub: httpx.Client, method: str, url: str, body: Any, status: int
) -> None:
    channel = kpub.post("/channels", headers=bearer(KEY))
    assert channel.status_code == 201
    c = channel.json()["id"]
    refused: list[dict[str, str]] = [
        {},
        bearer("wrong"),
        bearer(KEY + "x"),
        bearer(KEY[:-1]),
        {"Authorization": KEY},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": "Bearer"},
        {"X-Publisher-Key": KEY},
    ]
    for headers in refused:
        response = call(kpub, method, url, body, c, headers=headers)
        assert_error(response, 401, "unauthorized", extra=set())
        assert "www-authenticate" in response.headers
    # Nothing was done by the refused calls.
    state = kpub.get(f"/channels/{c}", headers=bearer(KEY))
    assert state.status_code == 200
    assert state.json()["messages"] == 0
    response = call(kpub, method, url, body, c, headers=bearer(KEY))
    assert response.status_code == status, response.text


def test_publisher_key_checked_before_the_channel_is_looked_up(kpub: httpx.Client) -> None:
    ghost = path(unique("ghost"))
    assert_error(kpub.get(f"/channels/{ghost}"), 401, "unauthorized", extra=set())
    assert_error(kpub.delete(f"/channels/{ghost}"), 401, "unauthorized", extra=set())
    response = kpub.post("/publish", json={"channels": [ghost], "data": 1})
    assert_error(response, 401, "unauthorized", extra=set())
    # Bad bodies are not even read without the key.
    assert_error(kpub.post("/publish", content=b"{"), 401, "unauthorized", extra=set())


def test_publisher_key_server_subscribers_need_no_key(kpub: httpx.Client) -> None:
    channel = kpub.post("/channels", headers=bearer(KEY)).json()["id"]
    sent = kpub.post(
        "/publish", json={"channels": [channel], "data": "hi"}, headers=bearer(KEY)
    ).json()
    for headers in ({}, bearer("wrong"), {"X-Forwarded-For": "203.0.113.9"}):
        response = kpub.get(
            "/subscribe", params={"channels": channel, "timeout": 0}, headers=headers
        )
        assert response.status_code == 200
        assert [m["id"] for m in response.json()["messages"]] == [sent["id"]]
        health = kpub.get("/health", headers=headers)
        assert health.status_code == 200 and health.json() == {"status": "ok"}


def test_publisher_key_allows_proxied_requests(kpub: httpx.Client) -> None:
    for header in ({"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"}):
        response = kpub.post("/channels", headers={**bearer(KEY), **header})
        assert response.status_code == 201, response.text


# -- publisher access: no key ------------------------------------------------------------

FORWARDING_HEADERS = [
    {"X-Forwarded-For": "203.0.113.5"},
    {"X-Forwarded-For": "127.0.0.1"},
    {"x-forwarded-for": "203.0.113.5, 10.0.0.1"},
    {"Forwarded": "for=203.0.113.5;proto=https"},
    {"FORWARDED": "for=127.0.0.1"},
]


@pytest.mark.parametrize(("method", "url", "body", "status"), PUBLISHER_CALLS, ids=CALL_IDS)
def test_without_key_loopback_publishers_are_allowed_but_not_proxied_ones(
    pub: httpx.Client, method: str, url: str, body: Any, status: int
) -> None:
    c = create(pub)["id"]
    for headers in FORWARDING_HEADERS:
        response = call(pub, method, url, body, c, headers=headers)
        assert_error(response, 403, "forbidden", extra=set())
    # A bearer key does not open anything when the server has none.
    response = call(pub, method, url, body, c, headers={**bearer("k"), **FORWARDING_HEADERS[0]})
    assert_error(response, 403, "forbidden", extra=set())
    assert info(pub, c)["messages"] == 0
    response = call(pub, method, url, body, c)
    assert response.status_code == status, response.text


def test_without_key_subscribers_may_come_through_a_proxy(pub: httpx.Client) -> None:
    channel = create(pub)["id"]
    sent = publish(pub, [channel], "proxied")
    for headers in FORWARDING_HEADERS:
        response = pub.get(
            "/subscribe", params={"channels": channel, "timeout": 0}, headers=headers
        )
        assert response.status_code == 200
        assert [m["id"] for m in response.json()["messages"]] == [sent["id"]]
        assert pub.get("/health", headers=headers).json() == {"status": "ok"}


# -- generic errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/nope"),
        ("POST", "/nope"),
        ("GET", "/health/"),
        ("GET", "/healthz"),
        ("GET", "/subscribe/17"),
        ("GET", "/channels/17/renew/now"),
        ("POST", "/channels/17/close"),
        ("POST", "/publish/batch/1"),
        ("GET", "/CHANNELS"),
    ],
)
def test_unknown_paths_are_404(pub: httpx.Client, method: str, url: str) -> None:
    assert_error(pub.request(method, url), 404, "not_found", extra=set())
    assert_healthy(pub)


@pytest.mark.parametrize(
    ("method", "url", "allowed"),
    [
        ("PUT", "/channels", {"GET", "POST"}),
        ("DELETE", "/channels", {"GET", "POST"}),
        ("PUT", "/channels/17", {"GET", "DELETE"}),
        ("POST", "/channels/17", {"GET", "DELETE"}),
        ("PATCH", "/channels/tag%3Ac%2B%2B", {"GET", "DELETE"}),
        ("GET", "/channels/17/renew", {"POST"}),
        ("PUT", "/channels/17/renew", {"POST"}),
        ("GET", "/publish", {"POST"}),
        ("PUT", "/publish", {"POST"}),
        ("GET", "/publish/batch", {"POST"}),
        ("POST", "/subscribe", {"GET"}),
        ("DELETE", "/subscribe", {"GET"}),
        ("POST", "/health", {"GET"}),
    ],
)
def test_wrong_methods_are_405_with_allow(
    pub: httpx.Client, method: str, url: str, allowed: set[str]
) -> None:
    response = pub.request(method, url)
    assert_error(response, 405, "method_not_allowed", extra=set())
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed
    assert_healthy(pub)


def _publication_of_size(channel: int, size: int) -> bytes:
    head = b'{"channels":[%d],"data":"' % channel
    tail = b'"}'
    body = head + b"x" * (size - len(head) - len(tail)) + tail
    assert len(body) == size
    return body


def test_body_of_exactly_1_mib_is_accepted(pub: httpx.Client) -> None:
    a = create(pub)["id"]
    response = pub.post("/publish", content=_publication_of_size(a, MIB))
    assert response.status_code == 201, response.text
    assert info(pub, a)["messages"] == 1


def test_body_over_1_mib_is_413(pub: httpx.Client) -> None:
    a = create(pub)["id"]
    response = pub.post("/publish", content=_publication_of_size(a, MIB + 1))
    assert_error(response, 413, "payload_too_large", extra=set())
    response = pub.post("/channels", content=b"{" + b" " * (2 * MIB) + b"}")
    assert_error(response, 413, "payload_too_large", extra=set())
    assert info(pub, a)["messages"] == 0
    assert_healthy(pub)


def test_chunked_body_over_1_mib_is_413(pub: httpx.Client) -> None:
    a = create(pub)["id"]
    body = _publication_of_size(a, MIB + 10)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = pub.post("/publish", content=chunks())
    assert_error(response, 413, "payload_too_large", extra=set())
    assert info(pub, a)["messages"] == 0
    assert_healthy(pub)


def test_declared_length_over_1_mib_is_413_before_the_body(
    api: ServerProcess, pub: httpx.Client
) -> None:
    with socket.create_connection(("127.0.0.1", api.port), timeout=30) as sock:
        sock.sendall(
            b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (MIB + 1)
        )
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed without an answer: {received!r}"
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 ")
        lines = [line.split(b":", 1) for line in head.split(b"\r\n")[1:]]
        headers = {k.strip().lower(): v.strip() for k, v in lines}
        assert headers[b"content-type"].startswith(b"application/json")
        length = int(headers[b"content-length"])
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk
            rest += chunk
        body = httpx.Response(413, content=rest[:length]).json()
        assert set(body) == ERROR_FIELDS
        assert body["error"] == "payload_too_large"
    assert_healthy(pub)


def test_every_error_keeps_the_server_serving(pub: httpx.Client, pool: ThreadPoolExecutor) -> None:
    """A parked subscriber is answered normally after a burst of bad requests."""
    a = create(pub)["id"]
    parked = park(pool, pub, [a])
    wait_subscribers(pub, a, 1)
    bad = [
        pub.post("/channels", content=b"{"),
        pub.post("/channels", json={"ttl": "x"}),
        pub.post("/publish", json={"channels": [a]}),
        pub.post("/publish", json={"channels": [unique("nope")], "data": 1}),
        pub.get("/subscribe", params={"channels": a, "timeout": -1}),
        pub.get("/nowhere"),
        pub.put("/publish"),
        pub.post("/publish", content=b"x" * (MIB + 1)),
    ]
    assert [r.status_code for r in bad] == [400, 400, 400, 404, 400, 404, 405, 413]
    assert info(pub, a)["subscribers"] == 1
    sent = publish(pub, [a], "after the storm")
    answer = parked.result(timeout=30)
    assert answer.status_code == 200
    assert [m["id"] for m in answer.json()["messages"]] == [sent["id"]]

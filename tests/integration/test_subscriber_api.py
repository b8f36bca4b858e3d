"""The subscriber side of the HTTP API (`GET /subscribe`, `GET /health`) against a real server.

Most tests share one module-scoped server (with `--max-timeout 30`) and work on
channels of their own, so they do not interfere. Parked polls run in threads; a test
waits for them to be parked by watching `subscribers` in `GET /channels/{id}`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.helpers import ServerProcess, start_server, wait_for

ServerFactory = Callable[..., ServerProcess]
Json = dict[str, Any]

MAX_ID = 2**53
MAX_TIMEOUT = 30
ERROR_FIELDS = {"error", "detail"}
POLL_FIELDS = {"messages", "cursor", "gap"}
MESSAGE_FIELDS = {"id", "time", "channels", "data"}
# A poll that should be answered at once gets this long before the test calls it parked.
CLIENT_TIMEOUT = 20.0


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api() -> Iterator[ServerProcess]:
    server = start_server("--max-timeout", str(MAX_TIMEOUT))
    yield server
    server.stop_checked()


@pytest.fixture(scope="module")
def pub(api: ServerProcess) -> httpx.Client:
    """The module's client (shared, also by poll threads: creating clients is slow)."""
    return api.client()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=16)
    yield executor
    executor.shutdown(wait=True, cancel_futures=True)


# -- helpers -----------------------------------------------------------------------------


def assert_error(
    response: httpx.Response, status: int, code: str, *, extra: frozenset[str] = frozenset()
) -> Json:
    """`response` is the JSON error `code` with `status` and exactly these fields."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers.get("content-type", "").startswith("application/json")
    body = response.json()
    assert isinstance(body, dict), body
    assert set(body) == ERROR_FIELDS | extra, body
    assert body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"], body
    return body


def create(client: httpx.Client, **body: Any) -> int:
    response = client.post("/channels", json=body)
    assert response.status_code == 201, response.text
    channel_id: int = response.json()["id"]
    return channel_id


def publish(client: httpx.Client, channels: list[int | str], data: Any = None) -> Json:
    response = client.post("/publish", json={"channels": channels, "data": data})
    assert response.status_code == 201, response.text
    result: Json = response.json()
    return result


def subscribers(client: httpx.Client, ref: int | str) -> int:
    response = client.get(f"/channels/{ref}")
    assert response.status_code == 200, response.text
    count: int = response.json()["subscribers"]
    return count


def wait_subscribers(client: httpx.Client, ref: int | str, count: int) -> None:
    wait_for(
        lambda: subscribers(client, ref) == count, what=f"{count} parked polls on channel {ref}"
    )


def query(channels: list[int | str], **params: Any) -> dict[str, Any]:
    return {"channels": ",".join(map(str, channels)), **params}


def poll(client: httpx.Client, channels: list[int | str], **params: Any) -> httpx.Response:
    """One poll that must be answered without parking for long (`CLIENT_TIMEOUT`)."""
    return client.get("/subscribe", params=query(channels, **params), timeout=CLIENT_TIMEOUT)


def poll_ok(client: httpx.Client, channels: list[int | str], **params: Any) -> Json:
    response = poll(client, channels, **params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: Json = response.json()
    assert set(body) == POLL_FIELDS, body
    assert isinstance(body["cursor"], str) and body["cursor"].isdigit(), body
    assert 0 <= int(body["cursor"]) < MAX_ID
    assert body["gap"] is False, body
    for message in body["messages"]:
        assert set(message) == MESSAGE_FIELDS, message
    return body


def park(
    pool: ThreadPoolExecutor, client: httpx.Client, channels: list[int | str], **params: Any
) -> Future[httpx.Response]:
    """Start a long poll in a thread; the future holds its response."""
    params.setdefault("timeout", 20)
    return pool.submit(client.get, "/subscribe", params=query(channels, **params), timeout=60.0)


def ids(body: Json) -> list[str]:
    return [message["id"] for message in body["messages"]]


def seen(message: Json) -> tuple[str, list[int], Any]:
    """What a subscriber saw of a message: id, subscribed channels it went to, data."""
    return message["id"], sorted(message["channels"]), message["data"]


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


# -- GET /health ---------------------------------------------------------------------------


def test_health(pub: httpx.Client) -> None:
    response = pub.get("/health")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"status": "ok"}


# -- answers from the cache ----------------------------------------------------------------


def test_cached_messages_are_answered_at_once(pub: httpx.Client) -> None:
    a = create(pub)
    first = publish(pub, [a], {"n": 1})
    second = publish(pub, [a], "two")
    # Nothing is published after this poll, so only the cache can answer it with messages.
    body = poll_ok(pub, [a], timeout=MAX_TIMEOUT)
    assert body == {
        "messages": [
            {"id": first["id"], "time": first["time"], "channels": [a], "data": {"n": 1}},
            {"id": second["id"], "time": second["time"], "channels": [a], "data": "two"},
        ],
        "cursor": second["id"],
        "gap": False,
    }


def test_without_timeout_cached_messages_are_answered(pub: httpx.Client) -> None:
    a = create(pub)
    sent = publish(pub, [a], 1)
    response = pub.get("/subscribe", params={"channels": a}, timeout=CLIENT_TIMEOUT)
    assert response.status_code == 200
    assert ids(response.json()) == [sent["id"]]


def test_publication_order_each_message_once_with_the_subscribed_channels(
    pub: httpx.Client,
) -> None:
    name = unique("tag:c++")
    a = create(pub, name=name)
    b = create(pub)
    c = create(pub)
    m1 = publish(pub, [a], 1)
    m2 = publish(pub, [b], 2)
    m3 = publish(pub, [name, b], 3)
    m4 = publish(pub, [c], 4)
    m5 = publish(pub, [b, c, a], 5)
    m6 = publish(pub, [a], 6)
    expected = [
        (m1["id"], [a], 1),
        (m2["id"], [b], 2),
        (m3["id"], sorted([a, b]), 3),
        (m5["id"], sorted([a, b]), 5),
        (m6["id"], [a], 6),
    ]
    orders: list[list[int | str]] = [[a, b], [b, a], [name, b], [b, name]]
    for channels in orders:
        body = poll_ok(pub, channels, timeout=0)
        assert [seen(m) for m in body["messages"]] == expected
        assert body["cursor"] == m6["id"]
    body = poll_ok(pub, [c], timeout=0)
    assert [seen(m) for m in body["messages"]] == [(m4["id"], [c], 4), (m5["id"], [c], 5)]
    everything = poll_ok(pub, [c, b, a], timeout=0)
    assert ids(everything) == [m["id"] for m in (m1, m2, m3, m4, m5, m6)]
    assert [sorted(m["channels"]) for m in everything["messages"]][4] == sorted([a, b, c])
    times = [m["time"] for m in everything["messages"]]
    assert times == sorted(times)
    assert [int(i) for i in ids(everything)] == sorted(int(i) for i in ids(everything))


def test_channels_given_by_name_are_reported_as_ids(pub: httpx.Client) -> None:
    name = unique("named/ü")
    a = create(pub, name=name)
    sent = publish(pub, [name], "x")
    body = poll_ok(pub, [name], timeout=0)
    assert [seen(m) for m in body["messages"]] == [(sent["id"], [a], "x")]


# -- since and cursor ----------------------------------------------------------------------


def test_since_returns_only_later_messages(pub: httpx.Client, pool: ThreadPoolExecutor) -> None:
    a = create(pub)
    m1, m2, m3 = (publish(pub, [a], i) for i in range(3))
    body = poll_ok(pub, [a], since=m1["id"], timeout=0)
    assert ids(body) == [m2["id"], m3["id"]]
    assert body["cursor"] == m3["id"]
    assert ids(poll_ok(pub, [a], since=m2["id"], timeout=0)) == [m3["id"]]
    # Nothing after the newest message: a parked poll gets only what comes next.
    parked = park(pool, pub, [a], since=m3["id"])
    wait_subscribers(pub, a, 1)
    m4 = publish(pub, [a], 4)
    response = parked.result(timeout=30)
    assert response.status_code == 200
    assert ids(response.json()) == [m4["id"]]
    assert response.json()["cursor"] == m4["id"]


def test_empty_answer_cursor_misses_nothing(pub: httpx.Client) -> None:
    a = create(pub)
    empty = poll_ok(pub, [a], timeout=0)
    assert empty["messages"] == []
    m1 = publish(pub, [a], 1)
    body = poll_ok(pub, [a], since=empty["cursor"], timeout=0)
    assert ids(body) == [m1["id"]]
    assert int(body["cursor"]) > int(empty["cursor"])
    # The same after a poll that waited and timed out.
    waited = poll_ok(pub, [a], since=m1["id"], timeout=0.3)
    assert waited["messages"] == []
    assert int(waited["cursor"]) >= int(m1["id"])
    m2 = publish(pub, [a], 2)
    m3 = publish(pub, [a], 3)
    body = poll_ok(pub, [a], since=waited["cursor"], timeout=0)
    assert ids(body) == [m2["id"], m3["id"]]


def test_empty_answer_cursor_after_publications_elsewhere_misses_nothing(
    pub: httpx.Client,
) -> None:
    a = create(pub)
    b = create(pub)
    mine = publish(pub, [a], "mine")
    elsewhere = publish(pub, [b], "elsewhere")
    empty = poll_ok(pub, [a], since=mine["id"], timeout=0)
    assert empty["messages"] == []
    assert int(empty["cursor"]) >= int(mine["id"])
    assert int(elsewhere["id"]) > int(mine["id"])
    later = publish(pub, [a], "later")
    assert ids(poll_ok(pub, [a], since=empty["cursor"], timeout=0)) == [later["id"]]


def test_cursors_only_grow(pub: httpx.Client) -> None:
    a = create(pub)
    cursors = [int(poll_ok(pub, [a], timeout=0)["cursor"])]
    for i in range(5):
        publish(pub, [a], i)
        body = poll_ok(pub, [a], since=str(cursors[-1]), timeout=0)
        cursors.append(int(body["cursor"]))
        cursors.append(int(poll_ok(pub, [a], since=body["cursor"], timeout=0)["cursor"]))
    assert cursors == sorted(cursors)
    assert len(set(cursors[::2])) == len(cursors[::2])


@pytest.mark.parametrize(
    "since",
    ["abc", "-1", "1.5", "", "1e5", "0x10", "+1", " 1", "1 ", "1" * 17, str(2**64), "\uff11\uff12"],
    ids=["letters", "negative", "fraction", "empty", "exponent", "hex", "plus", "lead-space",
         "trail-space", "17-digits", "2**64", "fullwidth-digits"],
)  # fmt: skip
def test_bad_cursor_is_400(pub: httpx.Client, since: str) -> None:
    a = create(pub)
    assert_error(poll(pub, [a], since=since, timeout=0), 400, "invalid_cursor")


def test_cursor_from_the_future_does_not_hide_later_messages(
    pub: httpx.Client, pool: ThreadPoolExecutor
) -> None:
    a = create(pub)
    publish(pub, [a], "before")
    future = str(MAX_ID - 1)
    # A parked poll with that cursor gets the next publication.
    parked = park(pool, pub, [a], since=future)
    wait_subscribers(pub, a, 1)
    m1 = publish(pub, [a], "next")
    response = parked.result(timeout=30)
    assert response.status_code == 200
    assert ids(response.json()) == [m1["id"]]
    # An immediate answer gives a cursor that sees what comes after it.
    body = poll_ok(pub, [a], since=future, timeout=0)
    m2 = publish(pub, [a], "after")
    assert m2["id"] in ids(poll_ok(pub, [a], since=body["cursor"], timeout=0))
    # So does a poll that waits and times out.
    body = poll_ok(pub, [a], since=future, timeout=0.2)
    assert body["messages"] == []
    m3 = publish(pub, [a], "later")
    assert ids(poll_ok(pub, [a], since=body["cursor"], timeout=0)) == [m3["id"]]


def test_message_ids_and_cursors_grow_across_restart(server_factory: ServerFactory) -> None:
    first = server_factory()
    old = first.client()
    a = create(old)
    m1 = publish(old, [a], "old")
    old_cursor = poll_ok(old, [a], timeout=0)["cursor"]
    assert old_cursor == m1["id"]
    assert first.stop() == 0

    second = server_factory()
    new = second.client()
    b = create(new)
    empty = poll_ok(new, [b], timeout=0)
    assert int(empty["cursor"]) > int(old_cursor)
    # A cursor kept by a client across the restart hides nothing published after it.
    m2 = publish(new, [b], "new")
    assert int(m2["id"]) > int(m1["id"])
    body = poll_ok(new, [b], since=old_cursor, timeout=0)
    assert ids(body) == [m2["id"]]
    assert int(body["cursor"]) > int(old_cursor)


# -- timeouts and parking ------------------------------------------------------------------


def test_timeout_zero_answers_at_once(pub: httpx.Client) -> None:
    a = create(pub)
    body = poll_ok(pub, [a], timeout=0)
    assert body["messages"] == []
    for zero in ("0", "0.0", "0e0", "0.000"):
        assert poll_ok(pub, [a], timeout=zero)["messages"] == []
    assert subscribers(pub, a) == 0


@pytest.mark.parametrize("timeout", ["0.3", ".25", "2e-1", "0.30000"])
def test_timeout_elapses_with_an_empty_answer(pub: httpx.Client, timeout: str) -> None:
    a = create(pub)
    body = poll_ok(pub, [a], timeout=timeout)
    assert body["messages"] == []
    assert subscribers(pub, a) == 0


def test_parked_poll_is_answered_by_a_publication(
    pub: httpx.Client, pool: ThreadPoolExecutor
) -> None:
    name = unique("parked")
    a = create(pub, name=name)
    b = create(pub)
    c = create(pub)
    parked = park(pool, pub, [name, b])
    wait_subscribers(pub, a, 1)
    assert subscribers(pub, b) == 1
    # Published to both subscribed channels (and one more): delivered once.
    sent = publish(pub, [b, c, a], {"to": "all"})
    response = parked.result(timeout=30)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == POLL_FIELDS
    assert body["messages"] == [
        {"id": sent["id"], "time": sent["time"], "channels": sorted([a, b]), "data": {"to": "all"}}
    ]
    assert body["cursor"] == sent["id"]
    assert body["gap"] is False
    assert subscribers(pub, a) == 0 and subscribers(pub, b) == 0


def test_parked_poll_ignores_other_channels(pub: httpx.Client, pool: ThreadPoolExecutor) -> None:
    a = create(pub)
    b = create(pub)
    parked = park(pool, pub, [a])
    wait_subscribers(pub, a, 1)
    publish(pub, [b], "not for a")
    assert subscribers(pub, a) == 1
    assert not parked.done()
    sent = publish(pub, [a, b], "for a")
    response = parked.result(timeout=30)
    assert [seen(m) for m in response.json()["messages"]] == [(sent["id"], [a], "for a")]


def test_parked_poll_gets_a_whole_batch_at_once(
    pub: httpx.Client, pool: ThreadPoolExecutor
) -> None:
    a = create(pub)
    b = create(pub)
    c = create(pub)
    parked = park(pool, pub, [a, b])
    wait_subscribers(pub, a, 1)
    items = [
        {"channels": [a], "data": "x"},
        {"channels": [c], "data": "y"},
        {"channels": [b], "data": "z"},
        {"channels": [a, b, c], "data": "w"},
    ]
    response = pub.post("/publish/batch", json={"messages": items})
    assert response.status_code == 201
    results = response.json()["messages"]
    answer = parked.result(timeout=30)
    assert answer.status_code == 200
    body = answer.json()
    assert [seen(m) for m in body["messages"]] == [
        (results[0]["id"], [a], "x"),
        (results[2]["id"], [b], "z"),
        (results[3]["id"], sorted([a, b]), "w"),
    ]
    assert body["cursor"] == results[3]["id"]


def test_default_timeout_parks(pub: httpx.Client, pool: ThreadPoolExecutor) -> None:
    a = create(pub)
    parked = pool.submit(pub.get, "/subscribe", params={"channels": a}, timeout=60.0)
    wait_subscribers(pub, a, 1)
    sent = publish(pub, [a], "woken")
    assert ids(parked.result(timeout=30).json()) == [sent["id"]]


def test_each_parked_poll_keeps_its_own_timeout(
    pub: httpx.Client, pool: ThreadPoolExecutor
) -> None:
    a = create(pub)
    long = park(pool, pub, [a], timeout=20)
    wait_subscribers(pub, a, 1)
    shorter = park(pool, pub, [a], timeout=0.6)
    shortest = park(pool, pub, [a], timeout=0.3)
    for poll_ in (shortest, shorter):
        response = poll_.result(timeout=30)
        assert response.status_code == 200
        assert response.json()["messages"] == []
    assert subscribers(pub, a) == 1
    assert not long.done()
    sent = publish(pub, [a], "for the patient one")
    assert ids(long.result(timeout=30).json()) == [sent["id"]]


def test_channel_given_by_id_and_by_name_counts_once(
    pub: httpx.Client, pool: ThreadPoolExecutor
) -> None:
    """Naming one channel twice (by id and by name) is either refused as a duplicate,
    or the channel is subscribed once: a message never lists a channel twice."""
    name = unique("alias")
    a = create(pub, name=name)
    sent = publish(pub, [a], "once")
    response = poll(pub, [a, name], timeout=0)
    if response.status_code == 400:
        assert_error(response, 400, "invalid_parameter")
        return
    assert response.status_code == 200, response.text
    assert response.json()["messages"] == [
        {"id": sent["id"], "time": sent["time"], "channels": [a], "data": "once"}
    ]
    parked = park(pool, pub, [name, a], since=sent["id"])
    wait_subscribers(pub, a, 1)
    later = publish(pub, [a], "later")
    assert parked.result(timeout=30).json()["messages"] == [
        {"id": later["id"], "time": later["time"], "channels": [a], "data": "later"}
    ]


# -- start and end -------------------------------------------------------------------------


def test_start_and_end_are_inclusive_bounds(pub: httpx.Client) -> None:
    a = create(pub)
    m1, m2, m3 = (publish(pub, [a], i) for i in range(3))
    t1, t2, t3 = (repr(m["time"]) for m in (m1, m2, m3))
    assert m1["time"] < m2["time"] < m3["time"]

    def matching(**params: Any) -> list[str]:
        return ids(poll_ok(pub, [a], timeout=0, **params))

    assert matching(start=t2, end=t2) == [m2["id"]]
    assert matching(start=t2) == [m2["id"], m3["id"]]
    assert matching(end=t2) == [m1["id"], m2["id"]]
    assert matching(start=t1, end=t3) == [m1["id"], m2["id"], m3["id"]]
    assert matching(start=t1, end=t1) == [m1["id"]]
    assert matching(start=t3, end=t3) == [m3["id"]]
    assert matching(start=t2, since=m2["id"]) == [m3["id"]]
    assert matching(end=t3, since=m1["id"]) == [m2["id"], m3["id"]]
    assert matching(start="0", end=t1) == [m1["id"]]
    assert matching(start=repr(m3["time"] + 1)) == []
    assert matching(end=repr(m1["time"] - 1)) == []
    # The response cursor still lets a re-poll miss nothing.
    body = poll_ok(pub, [a], timeout=0, start=t2, end=t2)
    assert body["cursor"] == m2["id"]
    assert ids(poll_ok(pub, [a], timeout=0, since=body["cursor"])) == [m3["id"]]


def test_start_in_the_future_is_not_matched_by_publications_now(
    pub: httpx.Client, pool: ThreadPoolExecutor
) -> None:
    a = create(pub)
    publish(pub, [a], "cached")
    later = repr(time.time() + 3600)
    assert poll_ok(pub, [a], timeout=0, start=later)["messages"] == []
    parked = park(pool, pub, [a], start=later)
    wait_subscribers(pub, a, 1)
    publish(pub, [a], "too early")
    assert subscribers(pub, a) == 1
    assert not parked.done()
    assert pub.delete(f"/channels/{a}").status_code == 204
    response = parked.result(timeout=30)
    body = assert_error(response, 410, "channel_closed", extra=frozenset({"channels"}))
    assert body["channels"] == [a]


def test_parked_poll_with_a_start_ahead_is_woken_once_it_has_come(
    pub: httpx.Client, pool: ThreadPoolExecutor
) -> None:
    a = create(pub)
    start = time.time() + 0.3
    parked = park(pool, pub, [a], start=repr(start))
    wait_subscribers(pub, a, 1)
    wait_for(lambda: time.time() > start + 0.05, what="the start time to come")
    sent = publish(pub, [a], "in range now")
    response = parked.result(timeout=30)
    assert response.status_code == 200
    assert ids(response.json()) == [sent["id"]]


def test_end_already_past_never_parks(pub: httpx.Client) -> None:
    a = create(pub)
    past = repr(time.time() - 60)
    # With the longest timeout allowed: parking would outlast the client's patience.
    body = poll_ok(pub, [a], timeout=MAX_TIMEOUT, end=past)
    assert body["messages"] == []
    sent = publish(pub, [a], "after end")
    body = poll_ok(pub, [a], timeout=MAX_TIMEOUT, end=repr(sent["time"] - 0.001))
    assert body["messages"] == []
    body = poll_ok(pub, [a], timeout=MAX_TIMEOUT, end=repr(sent["time"]), since=sent["id"])
    assert body["messages"] == []
    assert subscribers(pub, a) == 0


def test_end_passing_answers_a_parked_poll_with_nothing(pub: httpx.Client) -> None:
    a = create(pub)
    soon = repr(time.time() + 0.3)
    body = poll_ok(pub, [a], timeout=MAX_TIMEOUT, end=soon)
    assert body["messages"] == []
    assert time.time() >= float(soon) - 0.01
    assert subscribers(pub, a) == 0


def test_end_in_the_future_still_gets_publications(
    pub: httpx.Client, pool: ThreadPoolExecutor
) -> None:
    a = create(pub)
    parked = park(pool, pub, [a], end=repr(time.time() + 3600))
    wait_subscribers(pub, a, 1)
    sent = publish(pub, [a], "in range")
    assert ids(parked.result(timeout=30).json()) == [sent["id"]]


def test_start_after_end_is_400(pub: httpx.Client) -> None:
    a = create(pub)
    now = time.time()
    response = poll(pub, [a], timeout=0, start=repr(now), end=repr(now - 1))
    assert_error(response, 400, "invalid_parameter")
    assert_error(poll(pub, [a], start="2", end="1"), 400, "invalid_parameter")


# -- invalid numbers -----------------------------------------------------------------------

BAD_NUMBERS = ["-1", "-0.5", "-1e-9", "abc", "", "nan", "NaN", "inf", "-inf", "Infinity",
               "1e999", "1,5", "0x10", "1s"]  # fmt: skip


@pytest.mark.parametrize("param", ["timeout", "start", "end"])
@pytest.mark.parametrize("value", BAD_NUMBERS)
def test_bad_numbers_are_400(pub: httpx.Client, param: str, value: str) -> None:
    a = create(pub)
    response = poll(pub, [a], **{"timeout": 0, param: value})
    assert_error(response, 400, "invalid_parameter")


def test_timeout_above_max_timeout_is_400(pub: httpx.Client) -> None:
    a = create(pub)
    for too_long in (f"{MAX_TIMEOUT}.001", str(MAX_TIMEOUT + 1), "1e9"):
        assert_error(poll(pub, [a], timeout=too_long), 400, "invalid_parameter")
    sent = publish(pub, [a], "cached")
    assert ids(poll_ok(pub, [a], timeout=str(MAX_TIMEOUT))) == [sent["id"]]


# -- channel lists -------------------------------------------------------------------------

GHOSTS = [f"ghost-{i}" for i in range(101)]
BAD_CHANNEL_QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("missing", {}),
    ("empty", {"channels": ""}),
    ("comma", {"channels": ","}),
    ("trailing-comma", {"channels": "ghost,"}),
    ("leading-comma", {"channels": ",ghost"}),
    ("empty-item", {"channels": "ghost,,ghost2"}),
    ("duplicate-name", {"channels": "ghost,ghost"}),
    ("duplicate-id", {"channels": f"{MAX_ID - 9},{MAX_ID - 9}"}),
]


@pytest.mark.parametrize(
    "params", [p for _, p in BAD_CHANNEL_QUERIES], ids=[n for n, _ in BAD_CHANNEL_QUERIES]
)
def test_bad_channel_lists_are_400(pub: httpx.Client, params: dict[str, Any]) -> None:
    response = pub.get("/subscribe", params={**params, "timeout": 0}, timeout=CLIENT_TIMEOUT)
    assert_error(response, 400, "invalid_parameter")


def test_101_channels_are_400_too_many_channels(pub: httpx.Client) -> None:
    response = pub.get(
        "/subscribe", params={"channels": ",".join(GHOSTS), "timeout": 0}, timeout=CLIENT_TIMEOUT
    )
    assert_error(response, 400, "too_many_channels")


def test_duplicate_of_a_live_channel_is_400(pub: httpx.Client) -> None:
    name = unique("dup")
    a = create(pub, name=name)
    assert_error(poll(pub, [a, a], timeout=0), 400, "invalid_parameter")
    assert_error(poll(pub, [name, name], timeout=0), 400, "invalid_parameter")


def test_101_live_channels_are_400_and_100_are_fine(pub: httpx.Client) -> None:
    channels: list[int | str] = [create(pub) for _ in range(101)]
    assert_error(poll(pub, channels, timeout=0), 400, "too_many_channels")
    sent = publish(pub, [channels[0], channels[99]], "edge")
    body = poll_ok(pub, channels[:100], timeout=0)
    assert [seen(m) for m in body["messages"]] == [
        (sent["id"], sorted([channels[0], channels[99]]), "edge")
    ]


def test_unknown_channels_are_404_listed_as_given(pub: httpx.Client) -> None:
    a = create(pub)
    ghost = unique("ghost")
    missing_id = MAX_ID - 7
    response = poll(pub, [ghost, a, missing_id], timeout=0)
    body = assert_error(response, 404, "channel_not_found", extra=frozenset({"channels"}))
    assert [str(c) for c in body["channels"]] == [ghost, str(missing_id)]
    # Also when the poll would otherwise park.
    response = poll(pub, [a, ghost], timeout=5)
    body = assert_error(response, 404, "channel_not_found", extra=frozenset({"channels"}))
    assert [str(c) for c in body["channels"]] == [ghost]


def test_closed_and_expired_channels_are_404(pub: httpx.Client) -> None:
    a = create(pub)
    closed = create(pub)
    assert pub.delete(f"/channels/{closed}").status_code == 204
    expired = create(pub, ttl=0.2)
    wait_for(
        lambda: pub.get(f"/channels/{expired}").status_code == 404, what="the channel to expire"
    )
    response = poll(pub, [a, closed, expired], timeout=0)
    body = assert_error(response, 404, "channel_not_found", extra=frozenset({"channels"}))
    assert [str(c) for c in body["channels"]] == [str(closed), str(expired)]


INVALID_WITH_UNKNOWN: list[tuple[str, dict[str, Any], str]] = [
    ("negative-timeout", {"timeout": "-1"}, "invalid_parameter"),
    ("text-timeout", {"timeout": "soon"}, "invalid_parameter"),
    ("timeout-over-max", {"timeout": str(MAX_TIMEOUT + 1)}, "invalid_parameter"),
    ("nan-start", {"start": "nan"}, "invalid_parameter"),
    ("negative-end", {"end": "-5"}, "invalid_parameter"),
    ("start-after-end", {"start": "10", "end": "5"}, "invalid_parameter"),
    ("bad-cursor", {"since": "cursor"}, "invalid_cursor"),
]


@pytest.mark.parametrize(
    ("params", "code"),
    [(p, c) for _, p, c in INVALID_WITH_UNKNOWN],
    ids=[n for n, _, _ in INVALID_WITH_UNKNOWN],
)
def test_invalid_input_is_400_before_unknown_channels_404(
    pub: httpx.Client, params: dict[str, Any], code: str
) -> None:
    cases: list[list[int | str]] = [
        [unique("ghost")],
        [create(pub), unique("ghost")],
        [MAX_ID - 11],
    ]
    for channels in cases:
        response = poll(pub, channels, **params)
        assert_error(response, 400, code)


def test_times_past_the_largest_id_mean_never_and_do_not_overflow(server: ServerProcess) -> None:
    with server.client() as client:
        channel = client.post("/channels", json={}).json()["id"]
        client.post("/publish", json={"channels": [channel], "data": 1})
        late = client.get(
            "/subscribe", params={"channels": channel, "start": "8e307", "timeout": 0}
        )
        assert late.status_code == 200, late.text
        assert late.json()["messages"] == []
        unbounded = client.get(
            "/subscribe", params={"channels": channel, "end": "8e307", "timeout": 0}
        )
        assert [m["data"] for m in unbounded.json()["messages"]] == [1]

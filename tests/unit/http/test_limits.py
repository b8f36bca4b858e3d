"""The limits' bookkeeping without sockets: client keys, parked counts per address,
request timeouts swept on a hand-driven clock, publish buckets by key or address."""

from __future__ import annotations

import pytest

from pushup.config import Settings
from pushup.http.errors import RateLimited, TooManySubscriptions
from pushup.http.limits import BODY, HEAD, Limits, ParkedPerClient, RequestTimeouts, client_key
from pushup.http.request import Request
from tests.unit.fakes import FakeClock

# -- client addresses --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "trust", "key"),
    [
        ("203.0.113.5", None, False, "203.0.113.5"),
        ("203.0.113.5", "198.51.100.1", True, "203.0.113.5"),  # only loopback proxies
        ("2001:db8::1", None, False, "2001:db8::1"),
        ("127.0.0.1", None, False, None),  # this host: a proxy, not one client
        ("127.0.0.1", "198.51.100.1", False, None),
        ("::1", None, True, None),
        ("::ffff:127.0.0.1", None, False, None),
        ("127.0.0.1", "198.51.100.1", True, "198.51.100.1"),
        ("127.0.0.2", "10.0.0.1, 198.51.100.1", True, "198.51.100.1"),  # the proxy's entry
        ("127.0.0.1", " , ", True, None),
        (None, None, False, None),
    ],
)
def test_client_key(peer: str | None, forwarded_for: str | None, trust: bool, key: str) -> None:
    assert client_key(peer, forwarded_for, trust) == key


def test_parked_counts_per_address_up_to_the_limit_and_forgets_at_zero() -> None:
    parked = ParkedPerClient(2)
    quotas = [parked.admit("a"), parked.admit("a")]
    with pytest.raises(TooManySubscriptions):
        parked.admit("a")
    assert parked.admit("b") is not None
    assert parked.admit(None) is None  # not limited
    assert parked.count("a") == 2
    first = quotas[0]
    assert first is not None
    first.release()
    assert parked.admit("a") is not None
    for quota in (quotas[1], first):
        assert quota is not None
        quota.release()
    assert parked.count("a") == 0
    assert len(parked) == 1  # only b's left


def test_no_limit_counts_nothing() -> None:
    parked = ParkedPerClient(0)
    assert all(parked.admit("a") is None for _ in range(5000))
    assert len(parked) == 0


# -- request timeouts --------------------------------------------------------------------


class Conn:
    def __init__(self, name: str, timed_out: list[tuple[str, int]]) -> None:
        self.name = name
        self.timed_out = timed_out

    def request_timed_out(self, phase: int) -> None:
        self.timed_out.append((self.name, phase))


def test_a_sweep_tells_the_overdue_heads_and_bodies_only() -> None:
    clock = FakeClock(0.0)
    timeouts = RequestTimeouts(10.0, 30.0, clock)
    told: list[tuple[str, int]] = []
    a, b, c, d = (Conn(name, told) for name in "abcd")
    timeouts.watch(a, HEAD)
    clock.advance(5)
    timeouts.watch(b, HEAD)
    timeouts.watch(c, HEAD)
    timeouts.watch(c, BODY, HEAD)  # its head is in: its body has 30 s from now
    timeouts.watch(d, HEAD)
    timeouts.forget(d)  # closed
    clock.advance(5)
    timeouts.sweep()
    assert told == [("a", HEAD)]
    clock.advance(5)
    timeouts.sweep()
    assert told == [("a", HEAD), ("b", HEAD)]
    clock.advance(25)
    timeouts.sweep()
    assert told == [("a", HEAD), ("b", HEAD), ("c", BODY)]
    assert (timeouts.watched(HEAD), timeouts.watched(BODY)) == (0, 0)


# -- publish rate ------------------------------------------------------------------------


def publisher_request(peer: str, key: str | None = None) -> Request:
    request = Request(None, peer)
    if key is not None:
        request.headers["authorization"] = f"Bearer {key}"
    return request


def test_publishers_are_limited_by_key_else_by_address() -> None:
    limits = Limits(publish_rate=1.0, publish_burst=2, clock=FakeClock())
    limits.check_publish(publisher_request("127.0.0.1"), 2)
    with pytest.raises(RateLimited) as caught:
        limits.check_publish(publisher_request("127.0.0.1"), 1)
    assert dict(caught.value.headers)["Retry-After"] == "1"
    limits.check_publish(publisher_request("127.0.0.2"), 1)  # another address
    limits.check_publish(publisher_request("127.0.0.1", "k1"), 2)  # a key: its own
    with pytest.raises(RateLimited):
        limits.check_publish(publisher_request("127.0.0.2", "k1"), 1)  # same key elsewhere


def test_without_a_rate_publishing_is_not_limited() -> None:
    limits = Limits()
    for _ in range(10_000):
        limits.check_publish(publisher_request("127.0.0.1"), 1000)
    assert limits.publish_buckets is None


def test_limits_from_the_default_settings() -> None:
    limits = Limits.from_settings(Settings())
    assert limits.max_connections == 18_000
    assert limits.parked.limit == 1000
    assert limits.publish_buckets is None
    assert (limits.timeouts.header_timeout_s, limits.timeouts.body_timeout_s) == (10.0, 30.0)


def test_a_hit_is_counted() -> None:
    limits = Limits()
    limits.hit("connections")
    limits.hit("connections")
    assert limits.hits["connections"] == 2


@pytest.mark.parametrize(
    "bad",
    [
        {"max_connections": 0},
        {"max_parked_per_ip": -1},
        {"header_timeout_s": 0.0},
        {"body_timeout_s": float("inf")},
        {"max_message_bytes": 0},
        {"max_channels_per_request": 0},
        {"publish_rate": -1.0},
        {"publish_rate": float("nan")},
        {"publish_burst": -1},
        {"max_cache_bytes": 100},
        {"max_body_bytes": 10},
    ],
)
def test_bad_limit_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Settings(**bad)  # type: ignore[arg-type]

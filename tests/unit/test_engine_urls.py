"""Engine URLs: what `redis+sentinel://` names, and a clear sentence for each way to
get it wrong (the settings put `--engine` or `PUSHUP_ENGINE` in front of it)."""

from __future__ import annotations

import pytest

from pushup.engine_urls import USAGE, SentinelUrl, check_engine_url


def test_a_sentinel_url_names_its_sentinels_service_and_database() -> None:
    url = SentinelUrl.parse("redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/main/3")
    assert url == SentinelUrl(
        sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26380)), service="main", db=3
    )


def test_a_sentinel_url_takes_defaults_credentials_and_options() -> None:
    url = SentinelUrl.parse(
        "redis+sentinel://user:p%40ss@sentinel-a,[::1]:26381/main"
        "?sentinel_password=s3cret&wait=1&wait_timeout=0.25"
    )
    assert url.sentinels == (("sentinel-a", 26379), ("::1", 26381))
    assert (url.service, url.db) == ("main", 0)
    assert (url.username, url.password, url.sentinel_password) == ("user", "p@ss", "s3cret")
    assert (url.wait_replicas, url.wait_timeout_s) == (1, 0.25)


def test_a_password_alone_is_the_masters() -> None:
    url = SentinelUrl.parse("redis+sentinel://:s3cret@s1/main")
    assert (url.username, url.password, url.sentinel_password) == (None, "s3cret", None)
    assert url.wait_replicas == 0


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel:///main", "redis+sentinel:// names no Sentinel host"),
        ("redis+sentinel://s1", "redis+sentinel:// needs the service (master) name"),
        ("redis+sentinel://s1/", "redis+sentinel:// needs the service (master) name"),
        ("redis+sentinel://s1:x/main", "the Sentinel 's1:x' must be host:port"),
        ("redis+sentinel://s1,,s2/main", "the Sentinel '' must be host:port"),
        ("redis+sentinel://s1:0/main", "the port of the Sentinel 's1:0' is out of range"),
        ("redis+sentinel://s1/ma in", "the service name 'ma in' must be letters"),
        ("redis+sentinel://s1/main/x", "after the service name comes only the database"),
        ("redis+sentinel://s1/main/0/1", "after the service name comes only the database"),
        ("redis+sentinel://s1/main?db=1", "unknown option 'db'; redis+sentinel:// takes"),
        ("redis+sentinel://s1/main?wait=x", "wait must be a number of replicas, 0 to 16"),
        ("redis+sentinel://s1/main?wait_timeout=9", "wait_timeout must be seconds, 0.001 to 4"),
        ("redis+sentinel://s1/main?wait_timeout=nan", "wait_timeout must be seconds"),
    ],
)
def test_a_bad_sentinel_url_says_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_engine_url(url)
    assert str(caught.value).startswith(f"{USAGE}: {problem}"), caught.value


def test_a_bad_sentinel_url_is_not_repeated_with_its_password() -> None:
    with pytest.raises(ValueError) as caught:
        check_engine_url("redis+sentinel://:s3cret@s1:x/main")
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@host:x/0", "'redis://host:x/0'"),
        ("redis://user:s3cret@:6379/0", "'redis://user@:6379/0' names no host"),
        ("redis://:s3cret@host/db", "the database in 'redis://host/db' must be a number"),
        ("rediss://:s3cret@host:99999/0", "'rediss://host:99999/0'"),
        ("redis://:s3cret@[::1/0", "'redis://[::1/0'"),
        ("http://user:s3cret@host", "'http://user@host'"),
        ("nats://u:s3cret@h:x", "'h:x' in 'nats://u@h:x' must be host:port"),
        ("nats://u:s3cret@h:4222?foo=1", "unknown option 'foo' in 'nats://u@h:4222?foo=1'"),
    ],
)
def test_a_bad_url_is_repeated_without_its_password(url: str, shown: str) -> None:
    """The message ends up in a terminal, a journal or a CI log."""
    with pytest.raises(ValueError) as caught:
        check_engine_url(url)
    assert "s3cret" not in str(caught.value)
    assert shown in str(caught.value), caught.value


@pytest.mark.parametrize(
    "url",
    [
        "memory://",
        "redis://127.0.0.1:6379/0",
        "unix:///run/redis.sock",
        "redis+sentinel://127.0.0.1:26379/main",
        "nats://127.0.0.1:4222,127.0.0.1:4223",
    ],
)
def test_every_engine_url_form_is_accepted(url: str) -> None:
    check_engine_url(url)

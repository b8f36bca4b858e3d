"""Options declared once on `Settings`: flags, variables, defaults and the errors that name
what the user typed, read from flags and environment without a process."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from pushup.config import Settings
from pushup.engine_urls import USAGE, shown_url
from pushup.options import (
    GROUPS,
    Option,
    OptionError,
    SettingError,
    build,
    given_as,
    option,
    options,
    validate,
)

README = Path(__file__).parents[2] / "README.md"


def _option(flag: str) -> Option:
    return next(opt for opt in options(Settings) if opt.flag == flag)


def test_every_setting_is_an_option_in_a_known_group() -> None:
    specs = options(Settings)
    assert [opt.field for opt in specs] == [f.name for f in fields(Settings)]
    assert all(opt.group in GROUPS for opt in specs)
    assert len({opt.flag for opt in specs}) == len(specs)
    assert len({opt.env for opt in specs}) == len(specs)


def test_flags_and_variables_follow_the_field_names() -> None:
    by_field = {opt.field: (opt.flag, opt.env) for opt in options(Settings)}
    assert by_field["message_ttl_s"] == ("--message-ttl", "PUSHUP_MESSAGE_TTL")
    assert by_field["max_parked_per_ip"] == ("--max-parked-per-ip", "PUSHUP_MAX_PARKED_PER_IP")
    assert by_field["engine_url"] == ("--engine", "PUSHUP_ENGINE")
    assert by_field["upstream_url"] == ("--upstream", "PUSHUP_UPSTREAM")
    assert by_field["subscriber_secret"] == ("--subscriber-secret", "PUSHUP_SUBSCRIBER_SECRET")


def test_the_readme_documents_every_option() -> None:
    table = re.findall(r"^\| `(--[a-z-]+)` \|", README.read_text(), flags=re.MULTILINE)
    assert sorted(table) == sorted(opt.flag for opt in options(Settings))


def test_nothing_given_is_the_defaults() -> None:
    assert Settings.from_env({}, {}) == Settings()


def test_variables_are_read_and_parsed() -> None:
    settings = Settings.from_env(
        {
            "PUSHUP_PORT": "8080",
            "PUSHUP_MESSAGE_TTL": "2.5",
            "PUSHUP_TRUST_FORWARDED_FOR": "yes",
            "PUSHUP_DATA_DIR": "none",
            "PUSHUP_CORS_ORIGINS": "https://a.example, https://b.example",
            "PUSHUP_UNRELATED": "ignored",
        }
    )
    assert settings.port == 8080
    assert settings.message_ttl_s == 2.5
    assert settings.trust_forwarded_for is True
    assert settings.data_dir is None
    assert settings.cors_origins == ("https://a.example", "https://b.example")


def test_a_flag_wins_over_its_variable_and_an_empty_variable_is_unset() -> None:
    environ = {"PUSHUP_MAX_TIMEOUT": "1", "PUSHUP_HOST": "", "PUSHUP_TRUST_FORWARDED_FOR": "1"}
    flags = {"max_timeout_s": "5", "host": None, "trust_forwarded_for": False}
    settings = Settings.from_env(environ, flags)
    assert settings.max_timeout_s == 5.0
    assert settings.host == "127.0.0.1"
    assert settings.trust_forwarded_for is False


def test_an_empty_secret_or_upstream_is_none() -> None:
    settings = Settings.from_env({}, {"subscriber_secret": "", "upstream_url": ""})
    assert (settings.subscriber_secret, settings.upstream_url) == (None, None)


# A flag, a bad value for it, and the start of what is wrong with it.
BAD_VALUES = [
    ("--subscriber-secret", "short", "must be at least 32 bytes long"),
    (
        "--engine",
        "nope://x",
        f"{USAGE}, not 'nope://x'",
    ),
    (
        "--engine",
        "redis+sentinel://127.0.0.1:26379",
        f"{USAGE}: redis+sentinel:// needs the service (master) name as its path",
    ),
    ("--workers", "0", "must be at least 1"),
    ("--message-ttl", "-1", "must be a positive number of seconds"),
    ("--upstream-timeout", "inf", "must be a positive number of seconds"),
    ("--port", "not-a-port", "must be a whole number, not 'not-a-port'"),
    ("--port", "70000", "must be between 0 and 65535"),
    ("--max-body-bytes", "10", "must be at least 1024"),
    ("--publish-rate", "nan", "must be a number of messages a second"),
    ("--log-level", "loud", "must be one of debug, info, warning, error, not 'loud'"),
    ("--data-dir", " ", "must name a directory"),
    ("--cors-origins", "*,https://a.example", "must be either * or a list of origins"),
    ("--cors-origins", "https://A.example", "must list origins as browsers send them"),
    ("--upstream", "ftp://x", "must be http://host:port"),
    ("--host", "999.1.1.1", "must be an IP address or a host name, not '999.1.1.1'"),
    ("--host", "[::1]", "must be an IP address or a host name"),
]


def _check_names(message: str, name: str, problem: str, field: str) -> None:
    assert message.startswith(f"{name} {problem}"), message
    assert "\n" not in message
    if "_" in field:  # a field named otherwise than its flag
        assert field not in message


@pytest.mark.parametrize(
    ("flag", "text", "problem"), [*BAD_VALUES, ("--publisher-key", "", "must not be empty")]
)
def test_a_bad_flag_is_named(flag: str, text: str, problem: str) -> None:
    field = _option(flag).field
    with pytest.raises(OptionError) as caught:
        Settings.from_env({"PUSHUP_WORKERS": "1"}, {field: text})
    _check_names(str(caught.value), flag, problem, field)
    assert caught.value.given_as == flag


@pytest.mark.parametrize(
    ("flag", "text", "problem"),
    [*BAD_VALUES, ("--trust-forwarded-for", "maybe", "must be true or false")],
)
def test_a_bad_variable_is_named(flag: str, text: str, problem: str) -> None:
    option = _option(flag)
    with pytest.raises(OptionError) as caught:
        Settings.from_env({option.env: text}, {option.field: None})
    _check_names(str(caught.value), option.env, problem, option.field)


@dataclass(frozen=True)
class _Window:
    """Two options checked against each other, as a class of options may."""

    low: int = option(1, "The lower bound.", group="server")
    high: int = option(2, "The upper bound.", group="server")

    def __post_init__(self) -> None:
        validate(self)
        if self.high < self.low:
            raise SettingError("high", "must not be below --low")


def test_a_check_across_options_names_the_one_given() -> None:
    with pytest.raises(OptionError) as caught:
        build(_Window, {"PUSHUP_HIGH": "0"}, {})
    assert str(caught.value) == "PUSHUP_HIGH must not be below --low"
    with pytest.raises(OptionError) as caught:
        build(_Window, {}, {"low": "5", "high": None})
    assert str(caught.value) == "--high must not be below --low"


def test_settings_built_in_python_name_the_field() -> None:
    with pytest.raises(SettingError) as caught:
        Settings(subscriber_secret="short")
    assert str(caught.value) == "subscriber_secret must be at least 32 bytes long"
    assert caught.value.field == "subscriber_secret"


def test_shown_defaults_are_written_as_a_user_would() -> None:
    shown = {opt.flag: opt.shown_default for opt in options(Settings)}
    assert shown["--message-ttl"] == "300"
    assert shown["--max-cache-bytes"] == str(256 * 1024 * 1024)
    assert shown["--data-dir"] == "pushup-data"
    assert shown["--trust-forwarded-for"] == "false"
    assert shown["--publisher-key"] is None
    assert shown["--cors-origins"] is None


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "0.0.0.0", "localhost", "redis_1", "a.b-c."])
def test_addresses_and_host_names_are_hosts(host: str) -> None:
    assert Settings.from_env({}, {"host": host}).host == host


def test_a_later_error_names_the_flag_or_variable_the_value_came_from() -> None:
    """A start-up error (a taken port) names what the user would change."""
    assert given_as(Settings, "port", {"PUSHUP_PORT": "80"}, {"port": "81"}) == "--port"
    assert given_as(Settings, "port", {"PUSHUP_PORT": "80"}, {"port": None}) == "PUSHUP_PORT"
    assert given_as(Settings, "port", {"PUSHUP_PORT": ""}, {}) == "--port"
    assert given_as(Settings, "engine_url", {"PUSHUP_ENGINE": "redis://r"}, {}) == "PUSHUP_ENGINE"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@r:6379/0", "redis://r:6379/0"),
        (
            "rediss://user:s3cret@[::1]:6379/0?password=s3cret&ssl_cert_reqs=none",
            "rediss://user@[::1]:6379/0?ssl_cert_reqs=none",
        ),
        ("unix:///run/redis.sock?password=s3cret", "unix:///run/redis.sock"),
        ("redis://r:6379/0", "redis://r:6379/0"),
        (
            "redis+sentinel://:s3cret@s1,s2:26380/main?sentinel_password=s3cret&wait=1",
            "redis+sentinel://s1,s2:26380/main?wait=1",
        ),
        ("memory://", "memory://"),
    ],
)
def test_an_engine_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert shown_url(url) == shown

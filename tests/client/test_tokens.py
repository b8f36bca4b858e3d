"""`mint_token` against a real server started with a subscriber secret: what it mints
lets a poll through on the channels it grants, and no further; bad arguments are
refused before anything is signed."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import pytest

from pushup.client import (
    AsyncPublisher,
    Forbidden,
    Unauthorized,
    history,
    mint_token,
    subscribe,
)
from tests.helpers import ServerProcess, start_server

SECRET = "a-subscriber-secret-of-at-least-32-bytes"


@pytest.fixture(scope="module")
def api() -> Iterator[ServerProcess]:
    server = start_server("--data-dir", "none", env={"PUSHUP_SUBSCRIBER_SECRET": SECRET})
    yield server
    server.stop_checked()


@pytest.fixture
async def publisher(api: ServerProcess) -> AsyncIterator[AsyncPublisher]:
    async with AsyncPublisher(api.url) as publisher:
        yield publisher


def poll(api: ServerProcess, channels: list[Any], token: str) -> httpx.Response:
    return httpx.get(
        f"{api.url}/subscribe",
        params={"channels": ",".join(map(str, channels)), "timeout": "0"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10.0,
    )


async def test_a_minted_token_lets_a_subscriber_read_what_it_grants(
    api: ServerProcess, publisher: AsyncPublisher
) -> None:
    room = await publisher.create_channel(name="room:granted")
    alone = await publisher.create_channel()
    await publisher.publish([room.id, alone.id], {"text": "hello"})
    # By name and by id, as one channel or a list, with a subject.
    for channels, token in (
        (["room:granted"], mint_token(SECRET, "room:granted")),
        ([room.id], mint_token(SECRET, "room:granted")),
        ([room.id, alone.id], mint_token(SECRET, [room.id, alone.id], subject="ann")),
        (["room:granted", alone.id], mint_token(SECRET.encode(), ("room:granted", alone.id))),
        ([alone.id], mint_token(SECRET, [str(alone.id)], ttl=30)),
    ):
        answer = poll(api, channels, token)
        assert answer.status_code == 200, answer.text
        assert [m["data"] for m in answer.json()["messages"]] == [{"text": "hello"}]

    # The client's own readers take it as they take any token.
    token = mint_token(SECRET, ["room:granted"])
    assert [m.data async for m in history(api.url, ["room:granted"], token=token)] == [
        {"text": "hello"}
    ]
    async with subscribe(api.url, ["room:granted"], token=lambda: token) as messages:
        async for message in messages:
            assert message.data == {"text": "hello"}
            break


async def test_a_channel_the_token_does_not_grant_is_forbidden(
    api: ServerProcess, publisher: AsyncPublisher
) -> None:
    granted = await publisher.create_channel(name="room:mine")
    other = await publisher.create_channel(name="room:theirs")
    token = mint_token(SECRET, [granted.id])
    answer = poll(api, ["room:mine", "room:theirs"], token)
    assert answer.status_code == 403, answer.text
    assert answer.json()["channels"] == ["room:theirs"]
    with pytest.raises(Forbidden):
        [m async for m in history(api.url, [other.id], token=token)]


async def test_an_expired_token_is_refused_as_expired(
    api: ServerProcess, publisher: AsyncPublisher
) -> None:
    channel = await publisher.create_channel()
    # Minted an hour ago for a minute: well past the server's leeway of 10 s.
    token = mint_token(SECRET, [channel.id], ttl=60, now=time.time() - 3600)
    answer = poll(api, [channel.id], token)
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "token_expired"
    with pytest.raises(Unauthorized) as refused:
        [m async for m in history(api.url, [channel.id], token=token)]
    assert refused.value.code == "token_expired"


async def test_a_token_minted_with_another_secret_is_refused(
    api: ServerProcess, publisher: AsyncPublisher
) -> None:
    channel = await publisher.create_channel()
    answer = poll(api, [channel.id], mint_token("another-secret-" + "x" * 32, [channel.id]))
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "unauthorized"


def test_the_claims_are_the_ones_the_server_reads() -> None:
    now = math.floor(time.time()) + 0.25
    token = mint_token(SECRET, ["room:a", 17], ttl=90.5, subject="ann", now=now)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    # Never shorter than asked, never issued in the future; no audience.
    assert claims == {
        "channels": ["room:a", 17],
        "exp": math.ceil(now + 90.5),
        "iat": math.floor(now),
        "sub": "ann",
    }
    assert "sub" not in jwt.decode(
        mint_token(SECRET, 17), SECRET, algorithms=["HS256"], options={"verify_exp": False}
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"secret": "too short"}, ValueError, "secret must be at least 32 bytes"),
        ({"secret": 12345}, TypeError, "secret must be a str or bytes"),
        ({"channels": []}, ValueError, "at least one channel"),
        ({"channels": None}, TypeError, "channels must be a channel id or name"),
        ({"channels": b"room"}, TypeError, "channels must be a channel id or name"),
        ({"channels": {"room": 1}}, TypeError, "channels must be a channel id or name"),
        ({"channels": [True]}, TypeError, "neither a channel id (int) nor a name"),
        ({"channels": [1.5]}, TypeError, "neither a channel id (int) nor a name"),
        ({"channels": [0]}, ValueError, "channel id 0 is out of range"),
        ({"channels": [2**53]}, ValueError, "out of range"),
        ({"channels": ["9" * 40]}, ValueError, "out of range"),
        ({"channels": [""]}, ValueError, "1 to 200 characters"),
        ({"channels": ["x" * 201]}, ValueError, "1 to 200 characters"),
        ({"channels": ["a,b"]}, ValueError, "may not contain a comma"),
        ({"ttl": 0}, ValueError, "ttl must be a positive, finite number"),
        ({"ttl": -5}, ValueError, "ttl must be a positive, finite number"),
        ({"ttl": math.inf}, ValueError, "ttl must be a positive, finite number"),
        ({"ttl": math.nan}, ValueError, "ttl must be a positive, finite number"),
        ({"ttl": "600"}, TypeError, "ttl must be a number of seconds"),
        ({"ttl": True}, TypeError, "ttl must be a number of seconds"),
        ({"subject": ""}, ValueError, "subject must not be empty"),
        ({"subject": 42}, TypeError, "subject must be a str"),
        ({"now": -1}, ValueError, "now must be epoch seconds"),
        ({"now": "now"}, TypeError, "now must be epoch seconds"),
    ],
)
def test_bad_arguments_are_refused_naming_them(
    kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    arguments: dict[str, Any] = {"secret": SECRET, "channels": ["room:a"], **kwargs}
    with pytest.raises(error) as refused:
        mint_token(**arguments)
    assert words in str(refused.value)
    # One line, and never the secret itself.
    assert "\n" not in str(refused.value)
    assert SECRET not in str(refused.value)

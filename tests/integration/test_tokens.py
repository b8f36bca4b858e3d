"""Subscriber tokens (`--subscriber-secret`): HS256 JWTs naming the channels a subscriber
may read, checked on every subscriber transport before anything parks, against a real
server.

Most tests share one module-scoped server and work on channels of their own."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import httpx
import jwt
import pytest
from click.testing import CliRunner

from pushup.cli import main
from pushup.client import subscribe
from pushup.client.errors import Forbidden, Unauthorized
from tests.helpers import ServerProcess, start_server, until
from tests.integration.test_sse import EventStream

SECRET = "a-subscriber-secret-of-at-least-32-bytes"
# The server accepts a token this long after its `exp` (clock skew between hosts).
LEEWAY_S = 10.0
UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
}


def mint(
    channels: list[Any] | None,
    *,
    exp_in: float | None = 60.0,
    key: str = SECRET,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    """A token as a web app would mint it; None leaves a claim out."""
    payload = dict(claims)
    if channels is not None:
        payload["channels"] = channels
    if exp_in is not None:
        payload["exp"] = int(time.time() + exp_in)
    with warnings.catch_warnings():
        # HS512 with the server's (HS256-sized) secret: short for HS512, on purpose.
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.encode(payload, key, algorithm=algorithm)


def unsigned(channels: list[Any]) -> str:
    """A token with `alg: none` and no signature, as an attacker would send it."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'channels': channels, 'exp': 2**40})}."


@pytest.fixture(scope="module")
def api() -> Iterator[ServerProcess]:
    # The secret from the environment, as deployments should give it.
    server = start_server("--log-level", "debug", env={"PUSHUP_SUBSCRIBER_SECRET": SECRET})
    yield server
    server.stop_checked()


@pytest.fixture(scope="module")
def client(api: ServerProcess) -> httpx.Client:
    return api.client()


def create(client: httpx.Client, name: str | None = None) -> int:
    response = client.post("/channels", json={} if name is None else {"name": name})
    assert response.status_code == 201, response.text
    channel: int = response.json()["id"]
    return channel


def subscribers(client: httpx.Client, channel: int) -> int:
    count: int = client.get(f"/channels/{channel}").json()["subscribers"]
    return count


def poll(
    client: httpx.Client, channels: list[Any], token: str | None = None, *, header: bool = True
) -> httpx.Response:
    params: dict[str, str] = {"channels": ",".join(map(str, channels)), "timeout": "0"}
    headers = {}
    if token is not None and header:
        headers["Authorization"] = f"Bearer {token}"
    elif token is not None:
        params["token"] = token
    return client.get("/subscribe", params=params, headers=headers)


def assert_401(response: httpx.Response, code: str = "unauthorized") -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == code
    assert response.headers["www-authenticate"].startswith("Bearer")


# -- who gets in ------------------------------------------------------------------------


def test_every_subscriber_transport_needs_a_token(api: ServerProcess, client: httpx.Client) -> None:
    a = create(client)
    query = f"channels={a}"
    assert_401(client.get(f"/subscribe?{query}&timeout=0"))
    assert_401(client.get(f"/subscribe/sse?{query}"))
    assert_401(client.get(f"/subscribe?{query}", headers={"Accept": "text/event-stream"}))
    assert_401(client.get(f"/subscribe/ws?{query}", headers=UPGRADE))
    # Checked before the query: a malformed one is a 401 too, not a 400.
    assert_401(client.get("/subscribe?timeout=-1"))
    # Publishers are not subscribers: their rules are unchanged (loopback here).
    assert client.post("/publish", json={"channels": [a], "data": 1}).status_code == 201


@pytest.mark.parametrize(
    ("token", "code"),
    [
        pytest.param(
            lambda: mint([1], key="another-secret-of-at-least-32-bytes!"),
            "unauthorized",
            id="wrong-key",
        ),
        pytest.param(lambda: unsigned([1]), "unauthorized", id="alg-none"),
        pytest.param(lambda: mint([1], algorithm="HS512"), "unauthorized", id="alg-hs512"),
        pytest.param(lambda: mint([1], exp_in=-LEEWAY_S - 30), "token_expired", id="expired"),
        pytest.param(lambda: mint([1], exp_in=None), "unauthorized", id="no-exp"),
        pytest.param(lambda: mint(None), "unauthorized", id="no-channels"),
        pytest.param(lambda: mint("1"), "unauthorized", id="channels-not-a-list"),
        pytest.param(lambda: mint([1], aud="another-service"), "unauthorized", id="audience"),
        pytest.param(lambda: "not.a.token", "unauthorized", id="garbage"),
    ],
)
def test_a_bad_token_is_401(client: httpx.Client, token: Any, code: str) -> None:
    assert_401(poll(client, [1], token()), code)
    assert_401(poll(client, [1], token(), header=False), code)


def test_only_hs256_is_accepted(client: httpx.Client) -> None:
    # Signed with the right secret: only the algorithm is wrong.
    for token in (mint([1], algorithm="HS512"), unsigned([1])):
        response = poll(client, [1], token)
        assert_401(response)
        assert "HS256" in response.json()["detail"]


def test_a_token_within_the_leeway_is_accepted(client: httpx.Client) -> None:
    a = create(client)
    assert poll(client, [a], mint([a], exp_in=-LEEWAY_S / 2)).status_code == 200


def test_a_token_reads_its_channels_from_the_header_or_the_query(client: httpx.Client) -> None:
    a, b = create(client), create(client)
    published = client.post("/publish", json={"channels": [a], "data": "hi"}).json()
    token = mint([a, b])
    for header in (True, False):
        response = poll(client, [a, b], token, header=header)
        assert response.status_code == 200, response.text
        assert [m["id"] for m in response.json()["messages"]] == [published["id"]]
    # Another Authorization scheme (a site's Basic credentials) leaves the query's token.
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    response = client.get("/subscribe", params={"channels": a, "timeout": 0}, headers=basic)
    assert_401(response)
    response = client.get(
        "/subscribe", params={"channels": a, "timeout": 0, "token": token}, headers=basic
    )
    assert response.status_code == 200


def test_a_channel_outside_the_claim_is_403_before_anything_parks(
    api: ServerProcess, client: httpx.Client
) -> None:
    a, b = create(client), create(client)
    token = mint([a])
    response = client.get(
        "/subscribe", params={"channels": f"{a},{b}", "timeout": "30", "token": token}
    )
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert response.json()["channels"] == [b]
    assert subscribers(client, a) == 0
    sse = EventStream.open(api.port, f"/subscribe/sse?channels={a},{b}&token={token}")
    assert sse.head.status == 403
    assert json.loads(sse.head.body)["channels"] == [b]
    sse.close()
    ws = client.get(f"/subscribe/ws?channels={b}&token={token}", headers=UPGRADE)
    assert ws.status_code == 403


def test_ids_and_names_match_through_the_engine(client: httpx.Client) -> None:
    room = create(client, "tokens:room")
    other = create(client, "tokens:other")
    # Granted by name, asked by id; granted by id, asked by name.
    assert poll(client, [room], mint(["tokens:room"])).status_code == 200
    assert poll(client, ["tokens:room"], mint([room])).status_code == 200
    # A name does not grant another channel's id, nor an id another channel's name.
    response = poll(client, [other], mint(["tokens:room"]))
    assert response.status_code == 403
    assert response.json()["channels"] == [other]
    assert poll(client, ["tokens:other"], mint([room])).status_code == 403
    # An unknown channel outside the claim is refused, not reported missing; inside
    # the claim it is missing.
    response = poll(client, ["tokens:nowhere"], mint([room]))
    assert response.status_code == 403
    assert response.json()["channels"] == ["tokens:nowhere"]
    assert poll(client, ["tokens:nowhere"], mint(["tokens:nowhere"])).status_code == 404


async def test_a_granted_poll_parks_and_is_answered(api: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        a = (await http.post("/channels", json={"name": "tokens:parked"})).json()["id"]
        token = mint(["tokens:parked"])
        waiting = asyncio.create_task(
            http.get("/subscribe", params={"channels": a, "timeout": 20, "token": token})
        )

        async def parked() -> bool:
            return bool((await http.get(f"/channels/{a}")).json()["subscribers"])

        await until(parked, what="a parked poll")
        await http.post("/publish", json={"channels": [a], "data": "late"})
        response = await waiting
    assert response.status_code == 200
    assert [m["data"] for m in response.json()["messages"]] == ["late"]


# -- streams and expiry ------------------------------------------------------------------


def test_an_sse_stream_ends_when_its_token_expires(
    api: ServerProcess, client: httpx.Client
) -> None:
    a = create(client)
    # Past its `exp` but within the leeway: accepted now, expired in about 2 s.
    token = mint([a], exp_in=-(LEEWAY_S - 2))
    stream = EventStream.open(api.port, f"/subscribe/sse?channels={a}&token={token}")
    assert stream.head.status == 200
    until_parked(client, a, 1)
    client.post("/publish", json={"channels": [a], "data": "before"})
    assert stream.next_event().json()["data"] == "before"
    event = stream.next_event(timeout=10)
    assert event.event == "expired"
    assert event.json()["error"] == "token_expired"
    stream.assert_ends()
    stream.close()
    until_parked(client, a, 0)


async def test_a_websocket_closes_with_4401_when_its_token_expires(
    api: ServerProcess, client: httpx.Client
) -> None:
    a = create(client)
    token = mint([a], exp_in=-(LEEWAY_S - 2))
    url = f"ws://127.0.0.1:{api.port}/subscribe/ws?" + urlencode({"channels": a, "token": token})
    frames: list[Any] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        async with asyncio.timeout(15):
            async for frame in ws:
                frames.append(json.loads(frame.data))
        code = ws.close_code
    assert code == 4401
    assert frames == [{"error": "token_expired", "detail": frames[0]["detail"]}]


def until_parked(client: httpx.Client, channel: int, count: int) -> None:
    deadline = time.monotonic() + 10
    while subscribers(client, channel) != count:
        assert time.monotonic() < deadline, f"{count} subscribers never came"
        time.sleep(0.02)


# -- the Python client ---------------------------------------------------------------------


async def test_the_python_client_sends_its_token(api: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=api.url) as publisher:
        a = (await publisher.post("/channels")).json()["id"]
        await publisher.post("/publish", json={"channels": [a], "data": 1})
    minted: list[str] = []

    def fresh() -> str:
        minted.append(mint([a]))
        return minted[-1]

    for token in (mint([a]), fresh):
        async with subscribe(api.url, [a], token=token, timeout=5) as messages:
            assert (await anext(messages)).data == 1
    assert len(minted) == 1
    with pytest.raises(Unauthorized):
        async with subscribe(api.url, [a], timeout=5) as messages:
            await anext(messages)
    with pytest.raises(Forbidden):
        async with subscribe(api.url, [a], token=mint([a + 1]), timeout=5) as messages:
            await anext(messages)


# -- secrets and logs ----------------------------------------------------------------------


def test_tokens_never_reach_the_log(api: ServerProcess, client: httpx.Client) -> None:
    a = create(client)
    good, expired = mint([a]), mint([a], exp_in=-3600)
    poll(client, [a], good, header=False)
    poll(client, [a], expired, header=False)
    poll(client, [a + 1], good, header=False)
    client.get("/subscribe", params={"channels": a, "token": good + "x"})
    log = api.log()
    for token in (good, expired):
        assert token not in log
        assert token.split(".")[2] not in log  # not even the signature


def test_a_short_secret_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["serve", "--subscriber-secret", "short"])
    assert result.exit_code == 2
    assert "at least 32 bytes" in result.output

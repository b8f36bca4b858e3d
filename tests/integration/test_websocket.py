"""WebSocket subscriptions (`GET /subscribe/ws`) against a real server, with aiohttp's
client, and a raw socket where the test must behave as no library would (a peer
that never answers).

Most tests share one module-scoped server (short ping interval) and work on channels
of their own. A test waits for a subscription by watching `subscribers` in
`GET /channels/{id}`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
from websockets.frames import Close, Frame, Opcode

from tests.helpers import ServerProcess, start_server, until

Json = dict[str, Any]
ServerFactory = Callable[..., ServerProcess]

PING_INTERVAL = 0.3
MAX_TIMEOUT = 30
MESSAGE_FIELDS = {"id", "time", "channels", "data"}
UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
}


@pytest.fixture(scope="module")
def api() -> Iterator[ServerProcess]:
    server = start_server("--max-timeout", str(MAX_TIMEOUT), "--ping-interval", str(PING_INTERVAL))
    yield server
    server.stop_checked()


@pytest.fixture
async def pub(api: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api.url, timeout=30.0) as client:
        yield client


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def create(client: httpx.AsyncClient) -> int:
    response = await client.post("/channels", json={})
    assert response.status_code == 201, response.text
    channel_id: int = response.json()["id"]
    return channel_id


async def publish(client: httpx.AsyncClient, channels: list[int], data: Any = None) -> Json:
    response = await client.post("/publish", json={"channels": channels, "data": data})
    assert response.status_code == 201, response.text
    result: Json = response.json()
    return result


async def subscribers(client: httpx.AsyncClient, channel: int) -> int:
    response = await client.get(f"/channels/{channel}")
    assert response.status_code == 200, response.text
    count: int = response.json()["subscribers"]
    return count


async def wait_subscribers(client: httpx.AsyncClient, channel: int, count: int) -> None:
    async def reached() -> bool:
        return await subscribers(client, channel) == count

    await until(reached, what=f"{count} subscribers on {channel}")


def ws_url(api: ServerProcess, channels: list[int], **params: Any) -> str:
    query = "&".join(f"{key}={value}" for key, value in params.items())
    joined = ",".join(map(str, channels))
    return f"{api.url}/subscribe/ws?channels={joined}" + (f"&{query}" if query else "")


async def next_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> Json:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    value: Json = json.loads(msg.data)
    return value


async def next_message(ws: aiohttp.ClientWebSocketResponse) -> Json:
    """A message frame: exactly a poll's message object."""
    message = await next_json(ws)
    assert set(message) == MESSAGE_FIELDS, message
    return message


async def closing(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> None:
    """Read until the server's close frame (answered by aiohttp) and the end."""
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.CLOSE, msg
    assert (await ws.receive(timeout=timeout)).type == aiohttp.WSMsgType.CLOSED


def handshake(channel: int) -> bytes:
    """An upgrade request for a raw socket, as a browser would send it."""
    head = [f"GET /subscribe/ws?channels={channel} HTTP/1.1", "Host: pushup"]
    head += [f"{name}: {value}" for name, value in UPGRADE.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


def seen(message: Json) -> tuple[str, list[int], Any]:
    return message["id"], sorted(message["channels"]), message["data"]


# -- streaming ---------------------------------------------------------------------------


async def test_messages_come_in_order_as_text_frames_across_channels(
    api: ServerProcess, pub: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    a, b, other = await create(pub), await create(pub), await create(pub)
    cached = await publish(pub, [a], {"cached": True})
    async with session.ws_connect(ws_url(api, [a, b])) as ws:
        first = await next_message(ws)
        assert first == {
            "id": cached["id"],
            "time": cached["time"],
            "channels": [a],
            "data": {"cached": True},
        }
        await wait_subscribers(pub, a, 1)
        sent = [
            await publish(pub, [b], 1),
            await publish(pub, [other], "not subscribed"),
            await publish(pub, [a, b, other], 2),
            await publish(pub, [a], 3),
        ]
        expected = [
            (sent[0]["id"], [b], 1),
            (sent[2]["id"], sorted([a, b]), 2),
            (sent[3]["id"], [a], 3),
        ]
        assert [seen(await next_message(ws)) for _ in expected] == expected
        assert await subscribers(pub, b) == 1


async def test_reconnecting_with_since_misses_nothing_and_repeats_nothing(
    api: ServerProcess, pub: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    a, b = await create(pub), await create(pub)
    async with session.ws_connect(ws_url(api, [a, b])) as ws:
        await wait_subscribers(pub, a, 1)
        before = [(await publish(pub, [[a, b][n % 2]], n))["id"] for n in range(3)]
        assert [(await next_message(ws))["id"] for _ in before] == before
    await wait_subscribers(pub, a, 0)
    missed = [(await publish(pub, [[a, b][n % 2]], n))["id"] for n in range(3)]
    async with session.ws_connect(ws_url(api, [a, b], since=before[-1])) as ws:
        assert [(await next_message(ws))["id"] for _ in missed] == missed
        await wait_subscribers(pub, a, 1)
        live = (await publish(pub, [b], "live"))["id"]
        assert (await next_message(ws))["id"] == live


async def test_a_closed_channel_closes_the_socket_with_4410(
    api: ServerProcess, pub: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    a, b = await create(pub), await create(pub)
    async with session.ws_connect(ws_url(api, [a, b])) as ws:
        await wait_subscribers(pub, a, 1)
        assert (await pub.delete(f"/channels/{a}")).status_code == 204
        notice = await next_json(ws)
        assert notice["error"] == "channel_closed"
        assert notice["channels"] == [a]
        await closing(ws)
        assert ws.close_code == 4410
    await wait_subscribers(pub, b, 0)


async def test_an_end_of_range_closes_normally(
    api: ServerProcess, pub: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    a = await create(pub)
    sent = await publish(pub, [a], "in range")
    await publish(pub, [a], "after the range")
    async with session.ws_connect(ws_url(api, [a], end=sent["time"])) as ws:
        assert (await next_message(ws))["id"] == sent["id"]
        await closing(ws)
        assert ws.close_code == 1000
    assert await subscribers(pub, a) == 0
    b = await create(pub)
    async with session.ws_connect(ws_url(api, [b], end=time.time() + 0.5)) as ws:
        await wait_subscribers(pub, b, 1)
        await closing(ws)  # once the end passes
        assert ws.close_code == 1000
    assert await subscribers(pub, b) == 0


async def test_the_server_pings_and_answers_pings(
    api: ServerProcess, pub: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    a = await create(pub)
    async with session.ws_connect(ws_url(api, [a], timeout=0.05), autoping=False) as ws:
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.PING, msg
        await ws.pong(msg.data)
        await ws.ping(b"hello")
        while True:  # a server ping may come first
            msg = await ws.receive(timeout=10)
            if msg.type == aiohttp.WSMsgType.PONG:
                break
            assert msg.type == aiohttp.WSMsgType.PING, msg
            await ws.pong(msg.data)
        assert msg.data == b"hello"
        # Text from the client is ignored; `timeout` did not end the subscription.
        await ws.send_str("anything")
        sent = await publish(pub, [a], "after pings")
        while (msg := await ws.receive(timeout=10)).type == aiohttp.WSMsgType.PING:
            await ws.pong(msg.data)
        assert json.loads(msg.data)["id"] == sent["id"]


async def test_a_client_close_frees_the_subscription(
    api: ServerProcess, pub: httpx.AsyncClient, session: aiohttp.ClientSession
) -> None:
    a = await create(pub)
    ws = await session.ws_connect(ws_url(api, [a]))
    await wait_subscribers(pub, a, 1)
    await ws.close()
    assert ws.close_code == 1000  # the server answered our close frame
    await wait_subscribers(pub, a, 0)


async def test_a_peer_that_never_answers_pings_is_closed(
    api: ServerProcess, pub: httpx.AsyncClient
) -> None:
    a = await create(pub)
    sock = socket.create_connection(("127.0.0.1", api.port), timeout=10.0)
    try:
        sock.sendall(handshake(a))
        await wait_subscribers(pub, a, 1)
        # Read everything (pings included) but never answer: the server gives up.
        received = bytearray()

        def read_to_end() -> None:
            while chunk := sock.recv(65536):
                received.extend(chunk)

        await asyncio.wait_for(asyncio.to_thread(read_to_end), timeout=10.0)
        assert received.startswith(b"HTTP/1.1 101 ")
        ping = Frame(Opcode.PING, b"").serialize(mask=False)
        assert received.count(ping) >= 2
        await wait_subscribers(pub, a, 0)
    finally:
        sock.close()


async def test_a_peer_that_never_answers_our_close_frame_is_cut_off(
    api: ServerProcess, pub: httpx.AsyncClient
) -> None:
    a = await create(pub)
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    try:
        writer.write(handshake(a))
        await wait_subscribers(pub, a, 1)
        assert (await pub.delete(f"/channels/{a}")).status_code == 204
        # The server's close frame (4410) comes; this peer never echoes it, and the
        # server ends the connection within a couple of ping intervals.
        rest = await asyncio.wait_for(reader.read(), 10)  # up to the server's EOF
        assert Close(4410, "channel closed").serialize() in rest
    finally:
        writer.close()


async def test_a_close_frame_on_the_raw_socket_is_echoed(
    api: ServerProcess, pub: httpx.AsyncClient
) -> None:
    a = await create(pub)
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    try:
        writer.write(handshake(a))
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert answer.startswith(b"HTTP/1.1 101 ")
        assert b"Sec-WebSocket-Accept: " in answer
        close = Frame(Opcode.CLOSE, Close(1000, "bye").serialize())
        writer.write(close.serialize(mask=True))
        rest = await asyncio.wait_for(reader.read(), 10)  # up to the server's EOF
        assert rest.endswith(
            Frame(Opcode.CLOSE, Close(1000, "bye").serialize()).serialize(mask=False)
        )
        await wait_subscribers(pub, a, 0)
    finally:
        writer.close()


async def test_a_stopping_server_closes_with_1001(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server = server_factory()
    async with httpx.AsyncClient(base_url=server.url) as client:
        a = await create(client)
        async with session.ws_connect(ws_url(server, [a])) as ws:
            await wait_subscribers(client, a, 1)
            stopping = asyncio.create_task(asyncio.to_thread(server.stop))
            await closing(ws)
            assert ws.close_code == 1001
            assert await stopping == 0


# -- errors before the upgrade -------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("", 400, "invalid_parameter"),
        ("channels=no-such-channel", 404, "channel_not_found"),
        ("channels={a}&since=abc", 400, "invalid_cursor"),
        ("channels={a}&start=2&end=1", 400, "invalid_parameter"),
    ],
)
async def test_bad_requests_get_the_json_errors_of_polls(
    api: ServerProcess, pub: httpx.AsyncClient, query: str, status: int, code: str
) -> None:
    a = await create(pub)
    response = await pub.get(f"/subscribe/ws?{query.format(a=a)}", headers=UPGRADE)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == code
    assert await subscribers(pub, a) == 0


async def test_a_request_without_upgrade_gets_426(pub: httpx.AsyncClient) -> None:
    a = await create(pub)
    response = await pub.get(f"/subscribe/ws?channels={a}")
    assert response.status_code == 426
    assert response.headers["upgrade"] == "websocket"
    assert response.json()["error"] == "upgrade_required"


async def test_a_bad_handshake_gets_400(pub: httpx.AsyncClient) -> None:
    a = await create(pub)
    headers = {**UPGRADE, "Sec-WebSocket-Version": "8"}
    response = await pub.get(f"/subscribe/ws?channels={a}", headers=headers)
    assert response.status_code == 400
    assert response.headers["sec-websocket-version"] == "13"
    assert response.json()["error"] == "invalid_handshake"
    assert await subscribers(pub, a) == 0


async def test_aiohttp_sees_a_failed_handshake(
    api: ServerProcess, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
        await session.ws_connect(f"{api.url}/subscribe/ws?channels=no-such-channel")
    assert raised.value.status == 404

"""CORS on the subscriber side (`--cors-origins`): preflights, the echo of an allowed
origin on polls, streams and errors, the WebSocket origin check, and nothing on
publisher paths or without the option. Against a real server."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator

import aiohttp
import httpx
import pytest
from click.testing import CliRunner

from pushup.cli import main
from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, start_server, until
from tests.integration.test_sse import EventStream

APP = "https://app.example"
LOCAL = "http://localhost:3000"
EVIL = "https://evil.example"
UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
}
CORS_HEADERS = (
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-max-age",
)


@pytest.fixture(scope="module")
def api() -> Iterator[ServerProcess]:
    server = start_server("--cors-origins", f"{APP}, {LOCAL}")
    yield server
    server.stop_checked()


@pytest.fixture(scope="module")
def client(api: ServerProcess) -> httpx.Client:
    return api.client()


def create(client: httpx.Client) -> int:
    channel: int = client.post("/channels").json()["id"]
    return channel


def preflight(client: httpx.Client, path: str, origin: str) -> httpx.Response:
    return client.request(
        "OPTIONS",
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )


def no_cors(response: httpx.Response) -> bool:
    return not any(name in response.headers for name in CORS_HEADERS)


# -- preflights ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/subscribe", "/subscribe/sse", "/subscribe/ws"])
def test_a_preflight_from_an_allowed_origin_is_answered(client: httpx.Client, path: str) -> None:
    response = preflight(client, path, APP)
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["access-control-allow-methods"] == "GET"
    allowed = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert allowed == {"authorization", "last-event-id"}
    assert int(response.headers["access-control-max-age"]) > 0
    assert response.headers["vary"] == "Origin"


def test_a_preflight_from_another_origin_is_refused(client: httpx.Client) -> None:
    response = preflight(client, "/subscribe", EVIL)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert no_cors(response)


def test_publisher_paths_never_get_cors(client: httpx.Client) -> None:
    a = create(client)
    response = preflight(client, "/publish", APP)
    assert response.status_code == 405
    assert no_cors(response)
    response = client.post("/publish", json={"channels": [a], "data": 1}, headers={"Origin": APP})
    assert response.status_code == 201
    assert no_cors(response)
    assert "vary" not in response.headers
    assert no_cors(client.get(f"/channels/{a}", headers={"Origin": APP}))


# -- answers ---------------------------------------------------------------------------


def test_polls_and_their_errors_echo_an_allowed_origin(client: httpx.Client) -> None:
    a = create(client)
    client.post("/publish", json={"channels": [a], "data": 1})
    for origin in (APP, LOCAL):
        response = client.get(
            "/subscribe", params={"channels": a, "timeout": 0}, headers={"Origin": origin}
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == origin
        assert response.headers["vary"] == "Origin"
    # An error, so that the page can read why.
    response = client.get("/subscribe", params={"channels": "cors:none"}, headers={"Origin": APP})
    assert response.status_code == 404
    assert response.headers["access-control-allow-origin"] == APP
    # Another origin, or none: the answer, but nothing that lets a page read it.
    for headers in ({"Origin": EVIL}, {}):
        response = client.get("/subscribe", params={"channels": a, "timeout": 0}, headers=headers)
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers
        assert response.headers["vary"] == "Origin"


async def test_parked_polls_get_the_headers_of_their_own_origin(api: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        a = (await http.post("/channels")).json()["id"]
        origins = [APP, LOCAL, EVIL, None]
        polls = [
            asyncio.create_task(
                http.get(
                    "/subscribe",
                    params={"channels": a, "timeout": 20},
                    headers={} if origin is None else {"Origin": origin},
                )
            )
            for origin in origins
        ]

        async def parked() -> bool:
            return (await http.get(f"/channels/{a}")).json()["subscribers"] == len(origins)

        await until(parked, what="every poll parked")
        await http.post("/publish", json={"channels": [a], "data": "all"})
        answers = await asyncio.gather(*polls)
    for origin, response in zip(origins, answers, strict=True):
        assert response.status_code == 200
        assert [m["data"] for m in response.json()["messages"]] == ["all"]
        expected = origin if origin in (APP, LOCAL) else None
        assert response.headers.get("access-control-allow-origin") == expected
        assert response.headers["vary"] == "Origin"


def test_an_event_stream_head_echoes_an_allowed_origin(
    api: ServerProcess, client: httpx.Client
) -> None:
    a = create(client)
    stream = EventStream.open(api.port, f"/subscribe/sse?channels={a}", {"Origin": APP})
    assert stream.head.status == 200
    assert stream.head.headers["content-type"] == "text/event-stream"
    assert stream.head.headers["access-control-allow-origin"] == APP
    assert stream.head.headers["vary"] == "Origin"
    client.post("/publish", json={"channels": [a], "data": "x"})
    assert stream.next_event().json()["data"] == "x"
    stream.close()


def test_the_browser_client_can_be_imported_from_an_allowed_origin(client: httpx.Client) -> None:
    response = client.get("/pushup.js", headers={"Origin": APP})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["vary"] == "Origin"
    assert no_cors(client.get("/health", headers={"Origin": APP}))


async def test_websocket_handshakes_from_other_origins_are_refused(api: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        a = (await http.post("/channels")).json()["id"]
        refused = await http.get(f"/subscribe/ws?channels={a}", headers={**UPGRADE, "Origin": EVIL})
    assert refused.status_code == 403
    assert refused.json()["error"] == "forbidden"
    url = f"ws://127.0.0.1:{api.port}/subscribe/ws?channels={a}"
    async with aiohttp.ClientSession() as session:
        # A page of an allowed origin; of PushUp's own (its Host); no Origin (not a
        # browser).
        own = f"http://127.0.0.1:{api.port}"
        for headers in ({"Origin": APP}, {"Origin": own}, {}):
            async with session.ws_connect(url, headers=headers) as ws:
                assert not ws.closed


# -- configuration ---------------------------------------------------------------------


def test_without_the_option_there_is_no_cors(server_factory: ServerFactory) -> None:
    server = server_factory()
    client = server.client()
    a = create(client)
    response = client.get(
        "/subscribe", params={"channels": a, "timeout": 0}, headers={"Origin": APP}
    )
    assert response.status_code == 200
    assert no_cors(response)
    assert "vary" not in response.headers
    assert preflight(client, "/subscribe", APP).status_code == 405


def test_any_origin_with_a_star(server_factory: ServerFactory) -> None:
    server = server_factory(env={"PUSHUP_CORS_ORIGINS": "*"})
    client = server.client()
    a = create(client)
    response = client.get(
        "/subscribe", params={"channels": a, "timeout": 0}, headers={"Origin": EVIL}
    )
    assert response.headers["access-control-allow-origin"] == EVIL
    assert preflight(client, "/subscribe/sse", EVIL).status_code == 204


@pytest.mark.parametrize(
    "value", ["https://app.example/", "app.example", "HTTPS://APP.EXAMPLE", "*,https://a.example"]
)
def test_a_malformed_origin_is_a_usage_error(value: str) -> None:
    result = CliRunner().invoke(main, ["serve", "--cors-origins", value])
    assert result.exit_code == 2
    assert "cors" in result.output.lower()

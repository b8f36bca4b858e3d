"""The FastAPI example (examples/fastapi_rooms) driven in-process through httpx's ASGI
transport, its lifespan run as a server would, against a real PushUp that requires
subscriber tokens: a post reaches PushUp, and the token the page gets reads its room
and nothing else."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import jwt
import pytest

from examples.fastapi_rooms.app import Settings, create_app, from_env
from pushup.client import Forbidden, Unauthorized, history
from tests.helpers import ServerProcess, start_server

SECRET = "a-subscriber-secret-of-at-least-32-bytes"


@pytest.fixture(scope="module")
def pushup() -> Iterator[ServerProcess]:
    server = start_server("--data-dir", "none", env={"PUSHUP_SUBSCRIBER_SECRET": SECRET})
    yield server
    server.stop_checked()


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the application, between its start and its end (the lifespan)."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://rooms.test") as client,
    ):
        yield client


@pytest.fixture
async def rooms(pushup: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    """The example application, publishing to `pushup`."""
    async with running(Settings(pushup.url, SECRET)) as client:
        yield client


async def test_a_post_reaches_pushup_and_the_pages_token_reads_it(
    rooms: httpx.AsyncClient, pushup: ServerProcess
) -> None:
    answer = await rooms.get("/rooms/lobby/token")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    token = answer.text
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["channels"] == ["room:lobby"]
    assert claims["exp"] - claims["iat"] >= 600

    posted = await rooms.post("/rooms/lobby/messages", json={"text": "hello"})
    assert posted.status_code == 201, posted.text
    received = [m async for m in history(pushup.url, ["room:lobby"], token=token)]
    assert [(m.id, m.data) for m in received] == [(posted.json()["id"], {"text": "hello"})]


async def test_the_token_reads_its_room_and_nothing_else(
    rooms: httpx.AsyncClient, pushup: ServerProcess
) -> None:
    # Opening the room's page makes its channel, so the page's first poll finds it.
    assert (await rooms.get("/rooms/news")).status_code == 200
    token = (await rooms.get("/rooms/news/token")).text
    assert [m async for m in history(pushup.url, ["room:news"], token=token)] == []
    other = (await rooms.get("/rooms/lobby/token")).text
    with pytest.raises(Forbidden):
        [m async for m in history(pushup.url, ["room:news"], token=other)]
    with pytest.raises(Unauthorized):
        [m async for m in history(pushup.url, ["room:news"])]


async def test_the_page_subscribes_with_its_token(rooms: httpx.AsyncClient) -> None:
    page = await rooms.get("/rooms/news")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'import { subscribe } from "/pushup.js"' in page.text
    assert 'const room = "news";' in page.text


async def test_bad_requests(rooms: httpx.AsyncClient) -> None:
    for path in ("/rooms/nowhere", "/rooms/nowhere/token"):
        assert (await rooms.get(path)).status_code == 404
    assert (await rooms.post("/rooms/nowhere/messages", json={"text": "x"})).status_code == 404
    assert (await rooms.post("/rooms/lobby/messages", json={"text": ""})).status_code == 422
    assert (await rooms.post("/rooms/lobby/messages", json={})).status_code == 422


async def test_pushup_out_of_reach_is_a_502() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
    async with running(Settings(nowhere, SECRET)) as client:
        for answer in (
            await client.post("/rooms/lobby/messages", json={"text": "lost"}),
            await client.get("/rooms/lobby"),
        ):
            assert answer.status_code == 502, answer.text
            assert answer.json()["error"] == "pushup_failed"


def test_from_env_needs_the_subscriber_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUSHUP_SUBSCRIBER_SECRET", "short")
    with pytest.raises(SystemExit, match="PUSHUP_SUBSCRIBER_SECRET: set it"):
        from_env()
    monkeypatch.setenv("PUSHUP_SUBSCRIBER_SECRET", SECRET)
    assert from_env().title == "PushUp rooms"

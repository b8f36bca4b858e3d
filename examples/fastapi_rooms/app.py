"""Chat rooms as a FastAPI application, next to a PushUp that requires subscriber tokens:
an async endpoint publishes each post with `AsyncPublisher`, another mints the token
the room's page subscribes with, and `GET /rooms/<room>` is that page.

Run it behind PushUp, so the page, `/pushup.js` and the polls share one origin, with
one secret for both (uvicorn is not a dependency of PushUp: `pip install uvicorn`):

    export PUSHUP_SUBSCRIBER_SECRET=$(python -c 'import secrets; print(secrets.token_hex(32))')
    uvicorn --factory examples.fastapi_rooms.app:from_env --port 8000 &
    pushup serve --upstream http://127.0.0.1:8000
    # then open http://127.0.0.1:7070/rooms/lobby in two windows

It publishes to PUSHUP_URL (default http://127.0.0.1:7070), with PUSHUP_PUBLISHER_KEY
if the server has a key."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from pushup.client import (
    AsyncPublisher,
    ChannelNotFound,
    NameTaken,
    PushUpError,
    mint_token,
)
from pushup.client.tokens import MIN_SECRET_BYTES

ROOMS = frozenset({"lobby", "news"})
# A room's channel lives a day without activity; opening the room's page renews it.
ROOM_TTL_S = 86400.0
# Short, as a leaked token reads its room until it expires: the page's client fetches
# a fresh one before each poll.
TOKEN_TTL_S = 600.0

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>PushUp rooms</title>
<ul id="log"></ul>
<form id="post"><input name="text" required maxlength="2000"> <button>Post</button></form>
<script type="module">
  import { subscribe } from "/pushup.js";
  const room = ROOM;
  const log = document.getElementById("log");
  subscribe({
    channels: [`room:${room}`],
    token: () => fetch(`/rooms/${room}/token`).then((r) => r.text()),
    onMessage: (m) => log.append(Object.assign(document.createElement("li"), {
      textContent: m.data.text,
    })),
  });
  document.getElementById("post").onsubmit = (event) => {
    event.preventDefault();
    const body = JSON.stringify({ text: event.target.text.value });
    event.target.reset();
    fetch(`/rooms/${room}/messages`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body,
    });
  };
</script>
"""


@dataclass(frozen=True, slots=True)
class Settings:
    pushup_url: str
    subscriber_secret: str  # PushUp's --subscriber-secret
    publisher_key: str | None = None  # PushUp's --publisher-key


@dataclass(frozen=True, slots=True)
class PushUp:
    """What the endpoints need of PushUp, made once per application run."""

    publisher: AsyncPublisher
    subscriber_secret: str


class Post(BaseModel):
    text: str = Field(min_length=1, max_length=2000)


class Posted(BaseModel):
    id: str  # the message's id at PushUp, also a cursor


def pushup_of(request: Request) -> PushUp:
    pushup: PushUp = request.app.state.pushup
    return pushup


def known_room(room: str) -> str:
    if room not in ROOMS:
        raise HTTPException(404, f"no room {room!r}")
    return room


Room = Annotated[str, Depends(known_room)]
PushUpOf = Annotated[PushUp, Depends(pushup_of)]
router = APIRouter()


def room_channel(room: str) -> str:
    return f"room:{room}"


async def ensure_channel(publisher: AsyncPublisher, channel: str) -> None:
    """Make the channel, or renew it: PushUp forgets one idle for its TTL."""
    try:
        await publisher.create_channel(channel, ttl=ROOM_TTL_S)
    except NameTaken:
        with suppress(ChannelNotFound):  # expired in between: the next post makes it
            await publisher.renew_channel(channel)


@router.get("/rooms/{room}", response_class=HTMLResponse)
async def page(room: Room, pushup: PushUpOf) -> str:
    # Once per page, so the page's first poll finds the channel (and an idle room's
    # channel lives on while people open it).
    await ensure_channel(pushup.publisher, room_channel(room))
    return PAGE.replace("ROOM", json.dumps(room), 1)


@router.get("/rooms/{room}/token", response_class=PlainTextResponse)
async def subscriber_token(room: Room, pushup: PushUpOf) -> str:
    """The token the page subscribes with: its room's channel, for TOKEN_TTL_S. The
    page asks before every poll; minting costs no request to PushUp."""
    # A real application checks here that the signed-in user may read the room, and
    # passes `subject=` the user's id.
    return mint_token(pushup.subscriber_secret, [room_channel(room)], ttl=TOKEN_TTL_S)


@router.post("/rooms/{room}/messages", status_code=201)
async def post_message(room: Room, post: Post, pushup: PushUpOf) -> Posted:
    channel, data = room_channel(room), {"text": post.text}
    try:
        published = await pushup.publisher.publish(channel, data)
    except ChannelNotFound:
        await ensure_channel(pushup.publisher, channel)
        published = await pushup.publisher.publish(channel, data)
    return Posted(id=published.id)


async def pushup_failed(request: Request, exc: Exception) -> JSONResponse:
    """PushUp refused or was out of reach: nothing was published."""
    return JSONResponse({"error": "pushup_failed", "detail": str(exc)}, status_code=502)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One pool of connections to PushUp for the application's run.
        async with AsyncPublisher(settings.pushup_url, key=settings.publisher_key) as publisher:
            app.state.pushup = PushUp(publisher, settings.subscriber_secret)
            yield

    app = FastAPI(title="PushUp rooms", lifespan=lifespan)
    app.include_router(router)
    app.add_exception_handler(PushUpError, pushup_failed)
    return app


def from_env() -> FastAPI:
    """The application configured from the environment (`uvicorn --factory`)."""
    secret = os.environ.get("PUSHUP_SUBSCRIBER_SECRET", "")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise SystemExit(
            f"PUSHUP_SUBSCRIBER_SECRET: set it to PushUp's subscriber secret "
            f"(at least {MIN_SECRET_BYTES} bytes)"
        )
    url = os.environ.get("PUSHUP_URL", "http://127.0.0.1:7070")
    return create_app(Settings(url, secret, os.environ.get("PUSHUP_PUBLISHER_KEY") or None))

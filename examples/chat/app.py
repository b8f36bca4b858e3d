"""The chat web application: pages, joining rooms and posting, each post one batch
publication to PushUp. Browsers never talk to it directly: PushUp runs in front of it
(`pushup serve --upstream`), so pages, `/pushup.js` and the polls share one origin."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from pushup.client import AsyncPublisher, ChannelNotFound, Published, PushUpError

STATIC = Path(__file__).parent / "static"
# Room and user names become channel names: no comma, never all digits.
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
MAX_TEXT = 2000
# Channels live a day without activity; every post renews those it goes to.
CHANNEL_TTL_S = 86400.0
# One publication names at most 100 channels (the room's and 99 users').
USERS_PER_ITEM = 99


def room_channel(room: str) -> str:
    return f"room:{room}"


def user_channel(name: str) -> str:
    return f"user:{name}"


class Chat:
    """Rooms and their members, in memory, and publishing to them."""

    def __init__(self, publisher: AsyncPublisher) -> None:
        self.publisher = publisher
        self.members: dict[str, list[str]] = {}  # room -> names, in joining order
        self.rooms: dict[str, list[str]] = {}  # name -> rooms, in joining order

    async def join(self, room: str, name: str) -> list[str]:
        """Make sure both channels exist, add `name` to `room` (announced once)."""
        await self._ensure([room_channel(room), user_channel(name)])
        # No await between the test and the update: two joins at once announce once.
        if name not in self.members.setdefault(room, []):
            self.members[room].append(name)
            self.rooms.setdefault(name, []).append(room)
            await self._publish(room, [{"kind": "join", "room": room, "from": name}])
        return self.rooms[name]

    async def post(self, room: str, name: str, text: str) -> Published:
        """One batch: a join notice first if `name` is new to the room, then the post."""
        notes: list[dict[str, Any]] = []
        if name not in self.members.setdefault(room, []):
            self.members[room].append(name)
            self.rooms.setdefault(name, []).append(room)
            notes.append({"kind": "join", "room": room, "from": name})
            await self._ensure([room_channel(room), user_channel(name)])
        notes.append({"kind": "chat", "room": room, "from": name, "text": text})
        return (await self._publish(room, notes))[-1]

    async def _publish(self, room: str, notes: list[dict[str, Any]]) -> list[Published]:
        # Each note goes to the room's channel and to every member's own channel (where
        # their pages in other rooms count it as unread), all in one batch request.
        # Past 99 members a note needs several items; pages drop repeats by `uid`.
        users = [user_channel(name) for name in self.members[room]]
        groups = [users[i : i + USERS_PER_ITEM] for i in range(0, len(users), USERS_PER_ITEM)]
        items: list[tuple[list[str], Any]] = []
        last: list[int] = []
        for note in notes:
            note = {**note, "uid": uuid.uuid4().hex, "sent": time.time()}
            for i, group in enumerate(groups or [[]]):
                items.append(([room_channel(room), *group] if i == 0 else group, note))
            last.append(len(items) - 1)
        try:
            published = await self.publisher.publish_batch(items)
        except ChannelNotFound as exc:
            # PushUp lost them (restarted without a data directory, or they expired).
            await self._ensure(str(channel) for channel in exc.channels)
            published = await self.publisher.publish_batch(items)
        return [published[i] for i in last]

    async def _ensure(self, channels: Iterable[str]) -> None:
        for channel in channels:
            await self.publisher.create_channel(channel, ttl=CHANNEL_TTL_S, exist_ok=True)


PUBLISHER = web.AppKey("publisher", AsyncPublisher)
CHAT = web.AppKey("chat", Chat)


def _error(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status)


async def _body(request: web.Request, *fields: str) -> dict[str, str] | web.Response:
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "invalid_json", "the body is not valid JSON")
    if not isinstance(body, dict):
        return _error(400, "invalid_body", "the body must be a JSON object")
    found: dict[str, str] = {}
    for field in fields:
        value = body.get(field)
        if not isinstance(value, str):
            return _error(400, "invalid_body", f"{field} is required, as a string")
        found[field] = value
    for field in ("room", "name"):
        if field in found and not NAME.fullmatch(found[field]):
            return _error(
                400, "invalid_body", f"{field}: a letter, then up to 31 letters, digits, _ or -"
            )
    return found


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as JSON bodies, as PushUp answers them: an unknown path or method too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        return _error(exc.status, code, f"{request.method} {request.path}: {exc.reason}")
    except PushUpError as exc:
        # PushUp refused or could not be reached: the post was not published.
        return _error(502, "pushup_failed", str(exc))


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def join(request: web.Request) -> web.Response:
    body = await _body(request, "room", "name")
    if isinstance(body, web.Response):
        return body
    rooms = await request.app[CHAT].join(body["room"], body["name"])
    return web.json_response(
        {
            "channels": [room_channel(body["room"]), user_channel(body["name"])],
            "rooms": rooms,
        }
    )


async def post(request: web.Request) -> web.Response:
    body = await _body(request, "room", "name", "text")
    if isinstance(body, web.Response):
        return body
    text = body["text"].strip()
    if not text or len(text) > MAX_TEXT:
        return _error(400, "invalid_body", f"text: 1 to {MAX_TEXT} characters")
    published = await request.app[CHAT].post(body["room"], body["name"], text)
    return web.json_response({"id": published.id}, status=201)


def make_app(pushup_url: str, publisher_key: str | None = None) -> web.Application:
    """The chat application, publishing to the PushUp server at `pushup_url`."""
    app = web.Application(middlewares=[json_errors])

    async def publisher_context(app: web.Application) -> Any:
        publisher = AsyncPublisher(pushup_url, key=publisher_key)
        app[PUBLISHER] = publisher
        app[CHAT] = Chat(publisher)
        yield
        await publisher.aclose()

    app.cleanup_ctx.append(publisher_context)
    app.router.add_get("/", index)
    app.router.add_post("/api/join", join)
    app.router.add_post("/api/messages", post)
    app.router.add_static("/static/", STATIC)
    return app


def main() -> None:
    """`python -m examples.chat.app`: the application alone, on a port or a socket."""
    import argparse
    import os
    import socket

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pushup", default="http://127.0.0.1:7070", help="PushUp's URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--fd", type=int, help="serve on this already listening socket")
    args = parser.parse_args()
    app = make_app(args.pushup, os.environ.get("PUSHUP_PUBLISHER_KEY"))
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
        web.run_app(app, sock=sock, print=None)
    else:
        web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()

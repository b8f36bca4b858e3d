"""Publisher authorization by peer address, which loopback-only integration tests cannot
reach: a request from another host is made here as a Request with that peer."""

from __future__ import annotations

import pytest

from pushup.config import Settings
from pushup.core.hub import Hub
from pushup.engines.memory import MemoryEngine
from pushup.http.errors import Forbidden, Unauthorized
from pushup.http.request import Request
from pushup.http.response import Response
from pushup.http.router import Router
from pushup.http.services import Services


def _router(settings: Settings) -> Router:
    engine = MemoryEngine(message_ttl_s=300, max_messages=10, channel_ttl_s=60)
    return Router(Services(Hub(engine), settings))


def _create_request(peer: str | None, headers: dict[str, str] | None = None) -> Request:
    request = Request(None, peer)
    request.method, request.path = "POST", "/channels"
    request.headers.update(headers or {})
    return request


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"])
async def test_loopback_peers_may_publish_without_a_key(peer: str) -> None:
    reply = await _router(Settings()).handle(_create_request(peer))
    assert isinstance(reply, Response)
    assert reply.status == 201


@pytest.mark.parametrize(
    "peer", ["203.0.113.5", "10.0.0.1", "2001:db8::1", "::ffff:10.0.0.1", None]
)
async def test_other_peers_are_forbidden_without_a_key(peer: str | None) -> None:
    with pytest.raises(Forbidden):
        await _router(Settings()).handle(_create_request(peer))


@pytest.mark.parametrize("header", ["forwarded", "x-forwarded-for"])
async def test_proxied_loopback_requests_are_forbidden_without_a_key(header: str) -> None:
    with pytest.raises(Forbidden):
        await _router(Settings()).handle(_create_request("127.0.0.1", {header: "203.0.113.5"}))


async def test_with_a_key_any_peer_with_the_key_may_publish() -> None:
    router = _router(Settings(publisher_key="s3cret"))
    reply = await router.handle(_create_request("203.0.113.5", {"authorization": "Bearer s3cret"}))
    assert isinstance(reply, Response)
    assert reply.status == 201
    with pytest.raises(Unauthorized):
        await router.handle(_create_request("127.0.0.1", {"authorization": "Bearer nope"}))


async def test_subscribers_need_neither_key_nor_loopback() -> None:
    request = Request(None, "203.0.113.5")
    request.method, request.path = "GET", "/health"
    reply = await _router(Settings(publisher_key="s3cret")).handle(request)
    assert isinstance(reply, Response)
    assert reply.status == 200

"""The publishers' retries against a real server: a publication whose answer is lost
is sent again with the same `Idempotency-Key`, so the server stores it once; a key of
the caller's own makes a second call a replay too."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from pushup.client import IdempotencyKeyReused, TransportError
from tests.client.conftest import PublisherFactory
from tests.helpers import ServerProcess


class AnswerDropper:
    """A proxy in front of a server that passes every request on, one per connection,
    but drops the first `drop` answers: the request was served, its answer never comes."""

    def __init__(self, target_port: int, drop: int) -> None:
        self._target_port = target_port
        self.drop = drop
        self.keys: list[str | None] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._listener.close()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with client:
                request = _read_message(client)
                if not request:
                    continue
                head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
                self.keys.append(_header(head, "idempotency-key"))
                with socket.create_connection(("127.0.0.1", self._target_port)) as upstream:
                    upstream.sendall(request)
                    answer = _read_message(upstream)
                if self.drop > 0:
                    self.drop -= 1
                    continue  # closed without an answer
                client.sendall(answer)


def _header(head: str, name: str) -> str | None:
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def _read_message(sock: socket.socket) -> bytes:
    """One HTTP message with a Content-Length (or none), made to close after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(_header(head.decode("latin-1").lower(), "content-length") or 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body


@pytest.fixture
def dropper(server: ServerProcess) -> Iterator[AnswerDropper]:
    proxy = AnswerDropper(server.port, drop=0)
    yield proxy
    proxy.close()


async def test_a_lost_answer_is_retried_with_the_same_key_and_stored_once(
    publisher_factory: PublisherFactory, server: ServerProcess, dropper: AnswerDropper
) -> None:
    direct = publisher_factory(server.url)
    channel = await direct.create_channel("news")
    dropper.drop = 2
    published = await publisher_factory(dropper.url).publish("news", {"n": 1})
    keys = dropper.keys
    assert len(keys) == 3 and keys[0] is not None and keys == [keys[0]] * 3
    state = await direct.channel_info(channel.id)
    assert (state.messages, state.last_message_id) == (1, published.id)
    # The next publication has a key of its own.
    await publisher_factory(dropper.url).publish_batch([("news", 2), ("news", 3)])
    assert len(set(dropper.keys)) == 2


async def test_without_retries_a_lost_answer_is_a_transport_error(
    publisher_factory: PublisherFactory, server: ServerProcess, dropper: AnswerDropper
) -> None:
    await publisher_factory(server.url).create_channel("news")
    dropper.drop = 1
    with pytest.raises(TransportError):
        await publisher_factory(dropper.url, retries=0).publish("news", 1)
    assert len(dropper.keys) == 1


async def test_a_key_of_ones_own_makes_a_second_call_a_replay(publisher: Any) -> None:
    await publisher.create_channel("news")
    first = await publisher.publish("news", "once", idempotency_key="comment-17")
    again = await publisher.publish("news", "once", idempotency_key="comment-17")
    assert again == first
    batch = await publisher.publish_batch([("news", 1)], idempotency_key="batch-1")
    assert await publisher.publish_batch([("news", 1)], idempotency_key="batch-1") == batch
    with pytest.raises(IdempotencyKeyReused) as caught:
        await publisher.publish("news", "other", idempotency_key="comment-17")
    assert (caught.value.status, caught.value.code) == (422, "idempotency_key_reused")
    assert (await publisher.channel_info("news")).messages == 2

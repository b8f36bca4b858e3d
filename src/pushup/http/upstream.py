"""Reverse-proxy mode: every request PushUp does not answer itself goes to the web app.

With `--upstream URL`, the browser sees one origin: polls are answered here, and
everything else is sent on to the web app over a pool of keep-alive connections (one
aiohttp client session per process), both ways as it comes: the request body while the
client still sends it (see forward.py), the response chunk by chunk, flushed at once, so
an upstream event stream works through it. Every wait is asynchronous: a slow upstream
holds its own request only, never a parked poll or a publication. A refused or broken
upstream connection is answered 502, no answer within the read timeout 504.
A WebSocket handshake goes to the app on a connection of its own (tunnel.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, cast

import aiohttp
from yarl import URL

from pushup.http import tunnel
from pushup.http.errors import ApiError, InternalError
from pushup.http.forward import Forward
from pushup.http.response import CLOSE, KEEP_ALIVE, KEEP_ALIVE_10, frame
from pushup.observe.requests import answered_error

log = logging.getLogger("pushup.upstream")

# Headers about one hop only (RFC 9110 §7.6.1), never passed on; any header the
# Connection header names is one too. Proxy-* are dropped by prefix.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "trailer"}
)
# Request headers PushUp sets itself (100-continue is answered here, before the body).
_SET_HERE = frozenset({"expect", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})
# Headers aiohttp would add of its own; the client's, if any, are passed on instead.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_CONNECTION_LINE = {
    KEEP_ALIVE: b"",
    KEEP_ALIVE_10: b"Connection: keep-alive\r\n",
    CLOSE: b"Connection: close\r\n",
}

# How the response body is delimited on the client's side.
_NO_BODY = 0
_LENGTH = 1  # the upstream's Content-Length, bytes passed as they come
_CHUNKED = 2
_UNTIL_CLOSE = 3  # HTTP/1.0, or a closing connection: the body ends with it


class BadGateway(ApiError):
    status = 502
    code = "bad_gateway"


class GatewayTimeout(ApiError):
    status = 504
    code = "gateway_timeout"


class Client(Protocol):
    """The client connection a response is streamed to."""

    @property
    def write_paused(self) -> bool: ...

    def write(self, data: bytes) -> None: ...


class Upstream:
    """The web app behind PushUp, and the pool of connections to it."""

    def __init__(
        self, url: str, *, connect_timeout_s: float, read_timeout_s: float, max_header: int
    ) -> None:
        self.url = url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout_s, sock_read=read_timeout_s
        )
        # Where a WebSocket handshake goes (tunnel.py): the same app, without aiohttp.
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        parts = URL(self.url)
        self._address = (parts.raw_host or "", parts.port or 80, parts.scheme == "https")
        self._prefix = parts.raw_path.rstrip("/")
        self._max_header = max_header
        self._session: aiohttp.ClientSession | None = None
        # Responses waiting for a slow client to take more bytes, by connection.
        self._writable: dict[Client, asyncio.Future[None]] = {}

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            # No limit: like a parked poll, a request to the app must never queue
            # behind others (an upstream event stream holds its connection for long).
            connector=aiohttp.TCPConnector(limit=0),
            timeout=self._timeout,
            # Bytes pass through untouched, and nothing of one browser's session may
            # stick to a pooled connection another browser's request uses next.
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_NO_AUTO_HEADERS,
            max_line_size=self._max_header,
            max_field_size=self._max_header,
            trust_env=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def resume_writing(self, client: Client) -> None:
        """The client's connection takes bytes again."""
        waiter = self._writable.pop(client, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def forward(self, request: Forward) -> None:
        """Send `request` to the upstream and its answer to the client; set how the
        client connection goes on in `request.outcome_mode`. Never raises but for
        cancellation (the client has gone)."""
        client = cast(Client, request.connection)
        upload = request.upload
        mode = request.mode
        if request.headers.get("expect", "").lower() == "100-continue" and not upload.ended:
            client.write(_CONTINUE)  # its turn has come: ask for the body
        started = False
        try:
            if self._session is None:
                raise RuntimeError("the upstream session is not started")
            async with self._session.request(
                request.method,
                self._target(request),
                headers=_request_headers(request),
                data=upload.chunks() if request.has_body else None,
                allow_redirects=False,
            ) as response:
                if not upload.ended:
                    # Answered before the whole body came: the rest is never read.
                    mode = CLOSE
                head, body, mode = _response_head(response, request.method, mode)
                client.write(head)
                started = True
                if body != _NO_BODY:
                    await self._stream(response, client, chunked=body == _CHUNKED)
                if not upload.ended:
                    # Its request body was cut short: never reuse this connection.
                    response.close()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            mode = self._failed(request, client, exc, started, mode)
        finally:
            if not upload.ended:
                upload.discard()
                if not upload.aborted:  # else the connection answers 400, then closes
                    mode = CLOSE
        request.outcome_mode = mode

    async def upgrade(self, request: Forward) -> tunnel.AppEnd | None:
        """Send a WebSocket handshake to the app on a connection of its own: that
        connection, holding the app's answer, to splice with the client's; or None
        once a failure is answered (the client connection then closes)."""
        host, port, tls = self._address
        try:
            return await tunnel.connect(
                host,
                port,
                tls=tls,
                head=self._handshake(request),
                connect_timeout_s=self._connect_timeout_s,
                read_timeout_s=self._read_timeout_s,
                max_header=self._max_header,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = self._error(request, exc)
        headers = error.headers + answered_error(error)
        cast(Client, request.connection).write(frame(error.status, error.body(), CLOSE, headers))
        return None

    def _handshake(self, request: Forward) -> bytes:
        """The request's head for the app, as `forward` would send it, with the
        upgrade it asks for: hop-by-hop headers, but this hop is the one upgraded."""
        target = request.path if not request.query else f"{request.path}?{request.query}"
        lines = [f"{request.method} {self._prefix}{target} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in _request_headers(request)]
        lines += ["Connection: Upgrade", f"Upgrade: {request.headers['upgrade']}", "", ""]
        return "\r\n".join(lines).encode("latin-1")

    def _target(self, request: Forward) -> URL:
        target = request.path if not request.query else f"{request.path}?{request.query}"
        # As the client sent it: already percent-encoded, passed on unchanged.
        return URL(self.url + target, encoded=True)

    async def _stream(
        self, response: aiohttp.ClientResponse, client: Client, *, chunked: bool
    ) -> None:
        content = response.content
        while True:
            data = await content.readany()
            if not data:
                break
            if chunked:
                client.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                client.write(data)
            if client.write_paused:
                await self._drain(client)
        if chunked:
            client.write(_LAST_CHUNK)

    async def _drain(self, client: Client) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._writable[client] = waiter
        try:
            await waiter
        finally:
            if self._writable.get(client) is waiter:
                del self._writable[client]

    def _failed(
        self, request: Forward, client: Client, exc: Exception, started: bool, mode: int
    ) -> int:
        """Answer a failed exchange if nothing went out yet; the connection's mode."""
        if request.upload.aborted:
            # The client's own framing broke: the connection answers that itself.
            return CLOSE if started else mode
        if started:
            # Part of the answer is out: ending the connection is the only way to say
            # it is cut short (no last chunk, or fewer bytes than Content-Length).
            what = f"{request.method} {request.path} to {self.url}"
            log.warning("upstream response to %s cut short: %r", what, exc)
            return CLOSE
        error = self._error(request, exc)
        if not request.upload.ended:
            mode = CLOSE
        headers = error.headers + answered_error(error)
        client.write(frame(error.status, error.body(), mode, headers))
        return mode

    def _error(self, request: Forward, exc: Exception) -> ApiError:
        """The answer to an exchange with the app that failed before its answer."""
        what = f"{request.method} {request.path} to {self.url}"  # logged, never sent
        if isinstance(exc, TimeoutError):
            log.warning("upstream did not answer %s in time: %r", what, exc)
            return GatewayTimeout("the web app did not answer in time")
        if isinstance(exc, aiohttp.ClientError | OSError | tunnel.BadAnswer):
            log.warning("upstream failed on %s: %r", what, exc)
            return BadGateway("the web app could not be reached, or failed to answer")
        log.error("unexpected error while forwarding %s", what, exc_info=exc)
        return InternalError("the server failed to forward this request")


def _request_headers(request: Forward) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop ones, plus X-Forwarded-*."""
    headers = request.headers
    dropped = _hop_by_hop(headers.get("connection"))
    dropped |= _SET_HERE
    if "transfer-encoding" in headers:
        # The body is re-framed on the way; a Content-Length beside a
        # Transfer-Encoding could make the upstream read it differently.
        dropped.add("content-length")
    out = [
        (name, value)
        for name, value in headers.items()
        if name not in dropped and not name.startswith("proxy-")
    ]
    peer = request.peer or "unknown"
    prior = headers.get("x-forwarded-for")
    out.append(("X-Forwarded-For", f"{prior}, {peer}" if prior else peer))
    out.append(("X-Forwarded-Proto", "http"))
    host = headers.get("host")
    if host:
        out.append(("X-Forwarded-Host", host))
    return out


def _response_head(
    response: aiohttp.ClientResponse, method: str, mode: int
) -> tuple[bytes, int, int]:
    """The upstream's status and headers for the client, how the body is delimited,
    and the connection's mode after it."""
    status = response.status
    reason = (response.reason or "").encode("latin-1", "replace")
    upstream_headers = response.headers
    dropped = _hop_by_hop(upstream_headers.get("Connection"))
    chunked_upstream = "Transfer-Encoding" in upstream_headers
    if chunked_upstream:
        dropped.add("content-length")
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    has_length = False
    for name, value in response.raw_headers:
        key = name.decode("latin-1").lower()
        if key in dropped or key.startswith("proxy-"):
            continue
        has_length = has_length or key == "content-length"
        lines.append(b"%s: %s\r\n" % (name, value))
    if method == "HEAD" or status in (204, 304) or status < 200:
        body = _NO_BODY
    elif has_length:
        body = _LENGTH
    elif mode == KEEP_ALIVE:
        body = _CHUNKED
        lines.append(b"Transfer-Encoding: chunked\r\n")
    else:
        # HTTP/1.0 has no chunks: the body ends when the connection does.
        body = _UNTIL_CLOSE
        mode = CLOSE
    lines.append(_CONNECTION_LINE[mode])
    lines.append(b"\r\n")
    return b"".join(lines), body, mode


def _hop_by_hop(connection: str | None) -> set[str]:
    dropped = set(_HOP_BY_HOP)
    if connection:
        dropped.update(token.strip().lower() for token in connection.split(","))
    return dropped

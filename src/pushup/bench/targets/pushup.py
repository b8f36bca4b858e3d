"""PushUp itself, as a benchmark target."""

from __future__ import annotations

import subprocess
import sys

from pushup.bench.targets.base import PollAnswer, PollState
from pushup.bench.targets.process import (
    http_json,
    listening_socket,
    stop_process,
    wait_until_serving,
)


class PushUpTarget:
    name = "pushup"

    def __init__(self, host: str = "127.0.0.1", extra_args: tuple[str, ...] = ()) -> None:
        self.host = host
        self.port = 0
        self._extra_args = extra_args
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        sock = listening_socket(self.host)
        self.port = sock.getsockname()[1]
        args = [sys.executable, "-m", "pushup", "serve", "--fd", str(sock.fileno())]
        self._proc = subprocess.Popen(
            # No journal: the benchmark measures the server, not the disk.
            [*args, "--log-level", "warning", "--data-dir", "none", *self._extra_args],
            pass_fds=[sock.fileno()],
        )
        sock.close()
        wait_until_serving(self.host, self.port, "/health", self._proc)

    def stop(self) -> None:
        stop_process(self._proc)
        self._proc = None

    def pids(self) -> list[int]:
        return [] if self._proc is None else [self._proc.pid]

    def create_channel(self) -> str:
        status, body = http_json(self.host, self.port, "POST", "/channels", {})
        if status != 201:
            raise RuntimeError(f"create channel failed: {status} {body}")
        return str(body["id"])

    def subscribers(self, channel: str) -> int:
        status, body = http_json(self.host, self.port, "GET", f"/channels/{channel}")
        return int(body["subscribers"]) if status == 200 else 0

    def poll_request(self, state: PollState, timeout_s: float) -> bytes:
        since = "" if state.cursor is None else f"&since={state.cursor}"
        return (
            f"GET /subscribe?channels={state.channel}&timeout={timeout_s:g}{since} HTTP/1.1\r\n"
            f"Host: {self.host}\r\n\r\n"
        ).encode()

    def poll_answer(self, status: int, headers: dict[str, str], body: bytes) -> PollAnswer:
        if status != 200:
            return PollAnswer(status)
        # The load generator only needs the timed payloads (found by scanning the whole
        # body) and the cursor, which closes the envelope: no JSON decoding per answer.
        at = body.rfind(b'"cursor":"')
        if at < 0:
            return PollAnswer(status)
        cursor = body[at + 10 : body.index(b'"', at + 10)].decode()
        empty = body.startswith(b'{"messages":[]')
        return PollAnswer(status, [] if empty else [body], cursor)

    def publish_request(self, channel: str, payload: bytes) -> bytes:
        body = b'{"channels":[%s],"data":%s}' % (channel.encode(), payload)
        return (
            b"POST /publish HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (self.host.encode(), len(body), body)
        )

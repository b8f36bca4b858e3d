"""Nchan (nginx + libnginx-mod-nchan) as a benchmark target: the reference to beat.

How Nchan's long polling maps onto the benchmark's operations (checked against
Debian's nchan 1.3.6 on nginx 1.22):

- Channels need no creation: a channel exists from its first publication or
  subscription, so `create_channel` only makes up a fresh unique id.
- Publishing is `POST /pub?id=<channel>` with the raw payload as the body; the answer is
  201 when a subscriber was waiting, 202 when none was.
- A poll is `GET /sub/<timeout>?id=<channel>`. Its resume position is the pair
  (Last-Modified, Etag) of the last message received, sent back as If-Modified-Since and
  If-None-Match; that pair is `PollState.cursor`. An answer carries ONE message (the next
  after the position), never a batch, even when several are cached.
- Without resume headers (cursor None) a poll gets the OLDEST cached message at once
  (the configuration says `nchan_subscriber_first_message oldest`, also Nchan's
  default), and parks only on an empty channel. That matches PushUp without `since`
  (every cached message); it is not "wait for the next message", which Nchan does only
  with `nchan_subscriber_first_message newest`.
- A long poll that times out answers `408 Request Timeout` with an empty body, echoing
  the request's If-None-Match as Etag but no Last-Modified: it holds no new position.
  The adapter turns it into an empty answer with status 200 (as PushUp's empty answers)
  and cursor None, which means "unchanged": the subscriber keeps the cursor it sent, as
  the load generator does for any answer without a cursor (and as Nchan's own clients
  do). Nchan's responses are left exactly as Nchan sends them.
- `timeout_s == 0` (client pull) uses an interval-poll location, which answers at once:
  200 with the next message, or `304 Not Modified` (echoing both resume headers), which
  the adapter also turns into an empty 200 answer (with the echoed, unchanged cursor).
- Long-poll timeouts are fixed per nginx location, in whole seconds. The target serves
  `subscriber_timeout_s` (default 50, PushUp's default poll timeout) and each of
  `extra_timeouts_s`, each at `/sub/<seconds>`; a poll asking for a timeout that is not
  one of them waits `subscriber_timeout_s` (Nchan's configured timeout, as a deployed
  Nchan would): `location(timeout_s)` tells which path a timeout gets.
- Parked subscribers of a channel: `GET /pub?id=<channel>` with `Accept:
  application/json` answers {"messages", "requested", "subscribers",
  "last_message_id"}; 404 for a channel that does not exist (yet).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable

from pushup.bench.nchan import NchanServer, whole_seconds
from pushup.bench.targets.base import PollAnswer, PollState
from pushup.bench.targets.process import http_json


class NchanTarget:
    name = "nchan"

    def __init__(
        self,
        host: str = "127.0.0.1",
        subscriber_timeout_s: float = 50.0,
        extra_timeouts_s: Iterable[float] = (),
        workers: int = 1,
        shared_memory_mib: int | None = None,
    ) -> None:
        self.host = host
        self.port = 0
        self.subscriber_timeout_s = whole_seconds(subscriber_timeout_s)
        timeouts = {self.subscriber_timeout_s}
        timeouts.update(whole_seconds(t) for t in extra_timeouts_s)
        self._server = NchanServer(
            host, timeouts, workers=workers, shared_memory_mib=shared_memory_mib
        )
        self._names = itertools.count(1)
        self._run = f"{os.getpid():x}-{os.urandom(4).hex()}"

    def start(self) -> None:
        self._server.start()
        self.port = self._server.port

    def stop(self) -> None:
        self._server.stop()

    def pids(self) -> list[int]:
        pid = self._server.pid
        return [] if pid is None else [pid]

    def worker_pids(self) -> list[int]:
        return self._server.worker_pids()

    def create_channel(self) -> str:
        return f"b{self._run}-{next(self._names)}"

    def subscribers(self, channel: str) -> int:
        accept = {"Accept": "application/json"}
        status, body = http_json(self.host, self.port, "GET", f"/pub?id={channel}", headers=accept)
        if status == 404:
            return 0
        if status != 200 or not isinstance(body, dict):
            raise RuntimeError(f"nchan channel info failed: {status} {body!r}")
        return int(body["subscribers"])

    def location(self, timeout_s: float) -> str:
        """The path serving polls of `timeout_s`: see the module docstring."""
        if timeout_s == 0:
            return "/poll"
        seconds = round(timeout_s)
        if abs(seconds - timeout_s) < 1e-6 and seconds in self._server.timeouts_s:
            return f"/sub/{seconds}"
        return f"/sub/{self.subscriber_timeout_s}"

    def poll_request(self, state: PollState, timeout_s: float) -> bytes:
        resume = ""
        if isinstance(state.cursor, tuple):
            last_modified, etag = state.cursor
            resume = f"If-Modified-Since: {last_modified}\r\nIf-None-Match: {etag}\r\n"
        path = self.location(timeout_s)
        return (
            f"GET {path}?id={state.channel} HTTP/1.1\r\nHost: {self.host}\r\n{resume}\r\n"
        ).encode()

    def poll_answer(self, status: int, headers: dict[str, str], body: bytes) -> PollAnswer:
        if status == 200:
            return PollAnswer(status, [body], (headers["last-modified"], headers["etag"]))
        if status in (304, 408):
            # Nothing new: an ordinary empty answer, like PushUp's 200 with no messages.
            # A 304 echoes the position it was sent; a 408 does not (cursor None: keep).
            since, etag = headers.get("last-modified"), headers.get("etag")
            cursor = None if since is None or etag is None else (since, etag)
            return PollAnswer(200, [], cursor)
        return PollAnswer(status)

    def publish_request(self, channel: str, payload: bytes) -> bytes:
        return (
            b"POST /pub?id=%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Accept: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (channel.encode(), self.host.encode(), len(payload), payload)
        )

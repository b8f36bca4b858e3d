"""`pushup serve --workers N`: N worker processes on one port, kept running.

Workers are fresh interpreters (`python -m pushup.worker`), not forks, so none inherits
an event loop or a Redis connection; each gets its `Settings` through a pipe rather than
argv, which any local user can read and which would show the publisher key. Each worker
binds its own socket with SO_REUSEPORT and the kernel spreads new connections over
them; a dying worker takes only its own connections along. The supervisor first claims
the port (`pushup.startup.claim`): it binds one more such socket without listening on it
(so it never takes a connection), which resolves port 0 once for every worker and keeps
the port ours while a worker restarts, and it refuses a port another server listens on
(SO_REUSEPORT would let the workers join that server's group). With `--fd`, every worker
accepts on the inherited socket.

A worker that dies is restarted after a delay that doubles while it keeps dying soon
after starting, so a crash loop costs little. SIGTERM or SIGINT is passed to every
worker; those still running after a grace period are killed.

Without `--engine`, the workers share a private nats-server (`pushup.localnats`) that the
supervisor starts before them and stops after them. Should it die meanwhile, the
supervisor says so in one line and stops with status 1, rather than restart it: every
worker has lost its engine, the cause (a full disk, a damaged store) would likely
recur, and the process manager that restarts PushUp (systemd's Restart=on-failure, a
container's restart policy) then restarts the whole, which is what the user sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from urllib.parse import urlsplit

import orjson

from pushup import __version__, banner
from pushup.config import Settings
from pushup.engine_urls import MEMORY_SCHEMES
from pushup.localnats import LocalNats
from pushup.startup import Claim, StartupError, claim, inherited

log = logging.getLogger("pushup.supervisor")

STOP_GRACE_S = 10.0
# Beyond a worker's own --shutdown-timeout: time to flush its journal and let go of
# Redis before it is killed.
STOP_SLACK_S = 5.0
RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0
# A worker that lived this long was healthy: its next restart is quick again.
STABLE_S = 10.0
WORKER_COMMAND = (sys.executable, "-m", "pushup.worker")


class StartFailed(Exception):
    """A worker of the first generation exited before it was serving; `reason` when it
    said why (see `pushup.worker`)."""

    def __init__(self, slot: int, returncode: int, reason: StartupError | None = None) -> None:
        super().__init__(f"worker {slot} exited before serving ({describe_exit(returncode)})")
        self.returncode = returncode
        self.reason = reason


class Supervisor:
    """Starts `settings.workers` workers, restarts those that die, stops them all.

    `command` is the worker's argv (tests substitute small fakes); it reads the pickled
    worker spec (see `pushup.worker`) on stdin."""

    def __init__(
        self,
        settings: Settings,
        *,
        command: Sequence[str] = WORKER_COMMAND,
        stop_grace_s: float = STOP_GRACE_S,
        restart_min_s: float = RESTART_MIN_S,
        restart_max_s: float = RESTART_MAX_S,
        stable_s: float = STABLE_S,
    ) -> None:
        self.settings = settings
        self.command = list(command)
        self.stop_grace_s = stop_grace_s
        self.restart_min_s = restart_min_s
        self.restart_max_s = restart_max_s
        self.stable_s = stable_s
        self.restarts = 0
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._signum: int = signal.SIGTERM
        # Resolved once every slot's first worker serves (or on `stop`), failed by the
        # first of them that exits before serving.
        self._started: asyncio.Future[None] | None = None
        self._starting = settings.workers
        self._failed = False
        self._claim: Claim | None = None
        # Where the workers share their metrics (pushup.observe.peers), made fresh for
        # this run and removed after it; and the name of the node's stats channel.
        self.metrics_dir: str | None = None
        self._stats_secret = secrets.token_hex(12)
        # The private nats-server of workers without --engine, once started.
        self.nats: LocalNats | None = None

    @property
    def pids(self) -> list[int]:
        """The running workers' process ids, by slot."""
        return [proc.pid for _, proc in sorted(self._procs.items())]

    @property
    def serving(self) -> bool:
        """Whether every slot's first worker got to serving, and no stop was asked."""
        return self._starting == 0 and not self._stopping.is_set()

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Pass `signum` (SIGTERM or SIGINT) to every worker; `run` returns once they
        have stopped."""
        if self._stopping.is_set():
            return
        self._signum = signum
        self._stopping.set()
        if self._started is not None and not self._started.done():
            self._started.set_result(None)
        for proc in self._procs.values():
            _signal(proc, signum)

    async def run(self) -> int:
        """Serve until `stop`; 0 then, or 1 when the workers could not start. Raises
        StartupError when the port cannot be had, or a worker said why it could not
        start."""
        settings = self.settings
        if settings.fd is None:
            self._claim = claim(settings.host, settings.port, shared=True)
            settings = replace(settings, port=self._claim.port)
            base = banner.url(settings.host, settings.port)
            where = f"{base} (SO_REUSEPORT)"
        else:
            sock = inherited(settings.fd)
            base = banner.url(*sock.getsockname()[:2])
            sock.detach()  # the workers' to accept on: not closed here
            where = f"the inherited socket (fd {settings.fd}, {base})"
        # Made before the first wait, so that a stop asked meanwhile resolves it.
        self._started = asyncio.get_running_loop().create_future()
        try:
            shared = await self._start_nats(settings)
        except BaseException:
            self._release_port()
            raise
        if shared is not None:
            settings = replace(settings, engine_url=shared.url)
        failure: StartupError | None = None
        metrics_dir = self.metrics_dir = tempfile.mkdtemp(prefix="pushup-metrics-")
        slots = [
            asyncio.create_task(self._keep(slot, settings), name=f"pushup-worker-{slot}")
            for slot in range(settings.workers)
        ]
        for task in slots:
            task.add_done_callback(self._slot_done)
        watch = None if shared is None else asyncio.create_task(self._watch(shared))
        try:
            await self._started
            if not self._stopping.is_set():
                headline = f"pushup {__version__}: {len(slots)} workers serving on {where}"
                banner.log(log, headline, settings, base, **_shared_facts(shared))
            await self._stopping.wait()
            code = 1 if self._failed else 0
        except StartFailed as exc:
            if exc.reason is None:
                log.error("cannot start: %s; stopping the other workers", exc)
            failure = exc.reason
            self.stop()
            code = 1
        finally:
            await self._wait_stopped(slots)
            if watch is not None:
                watch.cancel()
            if shared is not None:
                await shared.stop()  # after the workers: they may flush to it until then
            self._release_port()
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if failure is not None:
            raise failure  # every worker would have said the same: once is enough
        log.info("supervisor %d: every worker has stopped", os.getpid())
        return code

    def _release_port(self) -> None:
        if self._claim is not None:
            self._claim.sock.close()
            self._claim.release()
            self._claim = None

    async def _start_nats(self, settings: Settings) -> LocalNats | None:
        """The private nats-server, started and ready, when the workers need one."""
        if urlsplit(settings.engine_url).scheme not in MEMORY_SCHEMES or settings.workers < 2:
            return None
        self.nats = LocalNats(settings)
        await self.nats.start()
        return self.nats

    async def _watch(self, shared: LocalNats) -> None:
        """Stop everything, with status 1, should nats-server die before the stop."""
        code = await shared.wait()
        if self._stopping.is_set():
            return
        kept = "" if shared.data_dir is None else f" (its log: {shared.log_path})"
        log.error(
            "nats-server (pid %d) %s%s; stopping the workers, which have no engine without it%s",
            shared.proc.pid if shared.proc is not None else 0,
            describe_exit(code),
            shared.last_words(),
            kept,
        )
        self._failed = True
        self.stop()

    async def _keep(self, slot: int, settings: Settings) -> None:
        """Run the worker of one slot, again and again, until stopping."""
        quick_deaths = 0
        first = True
        while not self._stopping.is_set():
            started = time.monotonic()
            proc, ready = await self._spawn(settings, slot)
            self._procs[slot] = proc
            if self._stopping.is_set():
                _signal(proc, self._signum)  # `stop` ran while it was being spawned
            serving = await ready
            if first:
                first = False
                if serving is True:
                    self._note_started()
                elif not self._stopping.is_set():
                    reason = serving if isinstance(serving, StartupError) else None
                    self._fail_start(StartFailed(slot, await proc.wait(), reason))
                    del self._procs[slot]
                    return
            code = await proc.wait()
            del self._procs[slot]
            if self._stopping.is_set():
                return
            lived_s = time.monotonic() - started
            quick_deaths = quick_deaths + 1 if lived_s < self.stable_s else 0
            delay_s = min(self.restart_max_s, self.restart_min_s * 2 ** max(0, quick_deaths - 1))
            log.warning(
                "worker %d (pid %d) %s after %.1f s; restarting it in %.1f s",
                slot,
                proc.pid,
                describe_exit(code),
                lived_s,
                delay_s,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await self._stopping.wait()
            if not self._stopping.is_set():
                self.restarts += 1

    async def _spawn(
        self, settings: Settings, slot: int = 0
    ) -> tuple[asyncio.subprocess.Process, asyncio.Task[bool | StartupError]]:
        """Start one worker; the task tells whether it got to serving, or why not."""
        read_end, write_end = os.pipe()
        keep = [write_end] if settings.fd is None else [write_end, settings.fd]
        spec = {
            "settings": settings,
            "ready_fd": write_end,
            "supervisor": os.getpid(),
            "slot": slot,
            "metrics_dir": self.metrics_dir,
            "stats_secret": self._stats_secret,
        }
        try:
            # A group of its own: a terminal's Ctrl-C (sent to the whole foreground
            # group) reaches only the supervisor, which passes it on once; a second
            # signal would cut the worker's graceful stop short.
            proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                pass_fds=keep,
                process_group=0,
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)  # the worker holds the only copy now: EOF once it exits
        ready = asyncio.create_task(_read_ready(read_end))
        assert proc.stdin is not None
        proc.stdin.write(pickle.dumps(spec))
        with contextlib.suppress(ConnectionError):  # it died at once: `ready` says so
            await proc.stdin.drain()
        proc.stdin.close()
        return proc, ready

    def _note_started(self) -> None:
        self._starting -= 1
        if self._starting == 0 and self._started is not None and not self._started.done():
            self._started.set_result(None)

    def _slot_done(self, task: asyncio.Task[None]) -> None:
        """A slot that fails (it cannot spawn, say) leaves a worker missing: stop all."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("cannot keep a worker running", exc_info=task.exception())
        self._failed = True
        self.stop()

    def _fail_start(self, exc: StartFailed) -> None:
        if self._started is not None and not self._started.done():
            self._started.set_exception(exc)

    async def _wait_stopped(self, slots: list[asyncio.Task[None]]) -> None:
        """Every worker got SIGTERM; kill those still running after the grace period."""
        self.stop()
        _, running = await asyncio.wait(slots, timeout=self.stop_grace_s)
        if running:
            log.warning(
                "workers %s still running %.0f s after SIGTERM: killing them",
                self.pids,
                self.stop_grace_s,
            )
            for proc in self._procs.values():
                _signal(proc, signal.SIGKILL)
            await asyncio.wait(running)


def _shared_facts(shared: LocalNats | None) -> dict[str, str]:
    """What the banner says of the private nats-server, when there is one."""
    if shared is None:
        return {}
    if shared.data_dir is None:
        data = "none: JetStream in a temporary directory, nothing kept across restarts"
    else:
        data = str(shared.data_dir.resolve())
    return {"engine": shared.describe(), "data": data}


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"was killed by {name}"
    return f"exited with code {returncode}"


async def _read_ready(fd: int) -> bool | StartupError:
    """True when the worker wrote its ready byte, False when it exited first (EOF), or
    the reason it gave for not starting."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bool | StartupError] = loop.create_future()

    def readable() -> None:
        if not done.done():
            done.set_result(_ready_or_reason(os.read(fd, 4096)))

    loop.add_reader(fd, readable)
    try:
        return await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _ready_or_reason(written: bytes) -> bool | StartupError:
    if written[:1] == b"0":
        try:
            field, value, problem = orjson.loads(written[1:])
        except (ValueError, TypeError):  # not what a worker writes
            return False
        return StartupError(str(field), value, str(problem))
    return written[:1] == b"1"


def _signal(proc: asyncio.subprocess.Process, signum: int) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)


def supervise(settings: Settings) -> int:
    """Run the supervisor until SIGTERM or SIGINT; the process exit code."""

    async def main() -> int:
        grace_s = settings.shutdown_timeout_s + STOP_SLACK_S
        supervisor = Supervisor(settings, stop_grace_s=grace_s)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, supervisor.stop, signum)
        return await supervisor.run()

    return asyncio.run(main())

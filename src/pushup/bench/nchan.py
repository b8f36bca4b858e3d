"""Nchan, the reference: nginx with Debian's nchan module and a generated configuration.

Users who want long polling without writing a server mostly pick Nchan, so the benchmark
runs it beside PushUp on the same machine, with settings matching PushUp's defaults
(1,000 messages and 300 s per channel) and one worker process (several on request).
Each run gets a fresh prefix directory (configuration, logs, pid and temp files) and a
free loopback port; nothing under /etc/nginx is read or touched.

Nchan fixes a long poll's timeout per location, so the configuration holds one
long-poll location per whole-second timeout the benchmark will use (`/sub/<seconds>`),
plus `/poll`, an interval-poll location that answers at once (the paper's client pull).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pushup.bench.targets.process import free_port, wait_until_serving

NGINX = "/usr/sbin/nginx"
NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"
INSTALL_HINT = "apt-get install nginx-light libnginx-mod-nchan"


def whole_seconds(timeout_s: float) -> int:
    """A long-poll timeout as Nchan's configuration takes it: whole seconds, at least 1."""
    seconds = round(timeout_s)
    if seconds < 1 or abs(seconds - timeout_s) > 1e-6:
        raise ValueError(f"Nchan long-poll timeouts are whole seconds >= 1, not {timeout_s:g}")
    return seconds


def nchan_config(
    prefix: Path,
    host: str,
    port: int,
    timeouts_s: Iterable[int],
    *,
    message_buffer_length: int = 1000,
    message_timeout_s: int = 300,
    workers: int = 1,
    shared_memory_mib: int | None = None,
) -> str:
    """The whole nginx.conf: nchan loaded, `workers` workers, everything inside `prefix`.

    Several workers bind the port with SO_REUSEPORT (`reuseport`), so the kernel spreads
    connections evenly and none passes its 19,500 connections while another idles, and
    share `shared_memory_mib` MiB for Nchan's channels and messages (default: Nchan's).
    """
    reuseport = " reuseport" if workers > 1 else ""
    shared = "" if shared_memory_mib is None else f"nchan_shared_memory_size {shared_memory_mib}m;"
    subscribers = "".join(
        f"""
        location = /sub/{seconds} {{
            nchan_subscriber longpoll;
            nchan_channel_id $arg_id;
            nchan_subscriber_first_message oldest;
            nchan_subscriber_timeout {seconds}s;
        }}"""
        for seconds in sorted(set(timeouts_s))
    )
    return f"""\
load_module {NCHAN_MODULE};
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile 20000;
user root;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;

events {{
    worker_connections 19500;
}}

http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    # PushUp never closes a keep-alive connection after some number of requests;
    # nginx's default (1000) would make keep-alive publishers reconnect.
    keepalive_requests 1000000;
    {shared}

    server {{
        # The same accept backlog as the sockets handed to PushUp and the MLP baseline.
        listen {host}:{port} backlog=4096{reuseport};
{subscribers}

        location = /poll {{
            nchan_subscriber intervalpoll;
            nchan_channel_id $arg_id;
            nchan_subscriber_first_message oldest;
        }}

        location = /pub {{
            nchan_publisher;
            nchan_channel_id $arg_id;
            nchan_message_buffer_length {message_buffer_length};
            nchan_message_timeout {message_timeout_s}s;
        }}

        location = /health {{
            default_type application/json;
            return 200 '{{"status":"ok"}}';
        }}
    }}
}}
"""


class NchanServer:
    """One nginx master (and its worker) serving Nchan on a free loopback port."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        timeouts_s: Iterable[int] = (50,),
        *,
        message_buffer_length: int = 1000,
        message_timeout_s: int = 300,
        workers: int = 1,
        shared_memory_mib: int | None = None,
    ) -> None:
        self.host = host
        self.port = 0
        self.timeouts_s = sorted(set(timeouts_s))
        self._message_buffer_length = message_buffer_length
        self._message_timeout_s = message_timeout_s
        self.workers = workers
        self._shared_memory_mib = shared_memory_mib
        self._prefix: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        for path in (NGINX, NCHAN_MODULE):
            if not os.path.exists(path):
                raise RuntimeError(f"{path} is missing: {INSTALL_HINT}")
        self._prefix = Path(tempfile.mkdtemp(prefix="pushup-nchan-"))
        try:
            # The port is free when picked but nginx binds it a moment later: retry the
            # rare loss of that race.
            for attempt in range(5):
                self.port = free_port(self.host)
                conf = self._prefix / "nginx.conf"
                conf.write_text(
                    nchan_config(
                        self._prefix,
                        self.host,
                        self.port,
                        self.timeouts_s,
                        message_buffer_length=self._message_buffer_length,
                        message_timeout_s=self._message_timeout_s,
                        workers=self.workers,
                        shared_memory_mib=self._shared_memory_mib,
                    )
                )
                log = self._prefix / "error.log"
                self._proc = subprocess.Popen(
                    [NGINX, "-p", str(self._prefix), "-c", str(conf), "-e", str(log)],
                    stdin=subprocess.DEVNULL,
                )
                try:
                    wait_until_serving(self.host, self.port, "/health", self._proc)
                    return
                except RuntimeError:
                    self._kill()
                    text = log.read_text(errors="replace") if log.exists() else ""
                    if "Address already in use" not in text or attempt == 4:
                        raise RuntimeError(f"nginx did not start:\n{text[-2000:]}") from None
        except BaseException:
            self.stop()
            raise

    def worker_pids(self) -> list[int]:
        """The master's children (its worker, and any cache helpers)."""
        if self._proc is None:
            return []
        path = f"/proc/{self._proc.pid}/task/{self._proc.pid}/children"
        try:
            with open(path) as f:
                return [int(pid) for pid in f.read().split()]
        except OSError:
            return []

    def stop(self) -> None:
        """Fast shutdown (SIGTERM: parked subscribers are dropped), then clean up."""
        self._kill()
        if self._prefix is not None:
            shutil.rmtree(self._prefix, ignore_errors=True)
            self._prefix = None

    def _kill(self) -> None:
        workers = self.worker_pids()
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            # A killed master leaves its worker behind: end it too, if that pid is
            # still an nginx process (the one this master started).
            for pid in workers:
                if _is_nginx(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


def _is_nginx(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().startswith(b"nginx")
    except OSError:
        return False

"""HAProxy in front of PushUp nodes, configured from the shipped deploy/haproxy.cfg.

The benchmark measures the balancer we ship, so the configuration is that file with
only its `server` lines replaced by the nodes of the run (deploy/haproxy.cfg lists three;
a run has one to four). Everything else (round robin, the long client and server
timeouts, /health checks, retries) is used as shipped.

One HAProxy process holds two descriptors per proxied connection, and a process may
open 20,000: HAProxy sizes its maxconn from that limit (about 9,980). More connections
need more processes: `processes` of them bind the same port (HAProxy sets SO_REUSEPORT
on Linux) and the kernel spreads new connections over them. Each gets its own runtime
API socket, from which readiness (every node UP) and per-server counters are read,
and its own source address towards the nodes (127.0.1.<n>): one address has about
28,000 ephemeral ports per node, which one node's 16,000 polls plus the sockets of the
previous cell still in TIME_WAIT would exhaust.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from pushup.bench.targets.process import free_port, stop_process

DEPLOY_CONFIG = Path(__file__).resolve().parents[4] / "deploy" / "haproxy.cfg"
INSTALL_HINT = "apt-get install haproxy"
FALLBACK = "/usr/sbin/haproxy"  # where Debian installs it, used when not on PATH
# Client connections one process takes: its maxconn (about 9,980), with a margin for the
# kernel's uneven spread over the processes.
CONNECTIONS_PER_PROCESS = 9_000
BACKEND = "pushup_nodes"

_SERVER_LINE = re.compile(r'\s*server\s+node\d+\s+"\$\{PUSHUP_NODE\d+\}"')
_NODE_DEFAULT = re.compile(r"\s*presetenv\s+PUSHUP_NODE\d+\s")


def processes_for(connections: int) -> int:
    """HAProxy processes needed to proxy `connections` at once (two sockets each)."""
    return max(1, -(-connections // CONNECTIONS_PER_PROCESS))


def haproxy_config(nodes: Sequence[str], template: str | None = None) -> str:
    """deploy/haproxy.cfg with its `server` lines replaced by one line per node
    ("host:port"); the frontend address and socket path stay environment variables."""
    text = DEPLOY_CONFIG.read_text() if template is None else template
    if not nodes:
        raise ValueError("no nodes to balance")
    out: list[str] = []
    placed = False
    for line in text.splitlines(keepends=True):
        if _SERVER_LINE.match(line):
            if not placed:  # the run's nodes where the file's first node was
                indent = line[: len(line) - len(line.lstrip())]
                out += [
                    f'{indent}server node{i} {node} source "${{PUSHUP_SOURCE}}"\n'
                    for i, node in enumerate(nodes, 1)
                ]
                placed = True
        elif not _NODE_DEFAULT.match(line):
            out.append(line)
    if not placed:
        raise ValueError("deploy/haproxy.cfg has no server lines to replace")
    return "".join(out)


class HAProxyGroup:
    """`processes` HAProxy processes on one free loopback port, balancing `nodes`."""

    def __init__(self, nodes: Sequence[str], processes: int = 1, host: str = "127.0.0.1") -> None:
        self.nodes = list(nodes)
        self.processes = processes
        self.host = host
        self.port = 0
        self.binary = shutil.which("haproxy") or FALLBACK
        self._dir: Path | None = None
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs]

    def socket_path(self, index: int) -> Path:
        assert self._dir is not None
        return self._dir / f"admin{index}.sock"

    def start(self) -> None:
        if not os.path.exists(self.binary):
            raise RuntimeError(f"haproxy is missing: {INSTALL_HINT}")
        if not DEPLOY_CONFIG.exists():
            raise RuntimeError(f"{DEPLOY_CONFIG} is missing: run from a PushUp checkout")
        # Short: the runtime API socket's path must fit in a sockaddr_un.
        self._dir = Path(tempfile.mkdtemp(prefix="pushup-hap-"))
        config = self._dir / "haproxy.cfg"
        config.write_text(haproxy_config(self.nodes))
        try:
            for attempt in range(5):
                self.port = free_port(self.host)
                for index in range(self.processes):
                    self._spawn(config, index)
                if self._wait_ready():
                    return
                text = self.log()
                self._stop_processes()
                if "in use" not in text or attempt == 4:
                    raise RuntimeError(f"haproxy did not start:\n{text[-2000:]}")
        except BaseException:
            self.stop()
            raise

    def _spawn(self, config: Path, index: int) -> None:
        assert self._dir is not None
        env = {
            **os.environ,
            "PUSHUP_FRONTEND": f"{self.host}:{self.port}",
            "PUSHUP_HAPROXY_SOCKET": str(self.socket_path(index)),
            "PUSHUP_SOURCE": f"127.0.1.{index + 1}",
        }
        with open(self._dir / "haproxy.log", "ab") as log:
            # -db: in the foreground, logging to stderr.
            self._procs.append(
                subprocess.Popen(
                    [self.binary, "-db", "-f", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )

    def _wait_ready(self, deadline_s: float = 20.0) -> bool:
        """Every process serving, its health checks seeing every node UP."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if any(proc.poll() is not None for proc in self._procs):
                return False
            states = [self.stats(index) for index in range(self.processes)]
            if all(
                len(state) == len(self.nodes) and all(r["status"] == "UP" for r in state.values())
                for state in states
            ):
                return True
            time.sleep(0.1)
        return False

    def stats(self, index: int) -> dict[str, dict[str, str]]:
        """Process `index`'s view of the nodes (`show stat`), by server name."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5.0)
                sock.connect(str(self.socket_path(index)))
                sock.sendall(b"show stat\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError:
            return {}
        lines = b"".join(chunks).decode(errors="replace").splitlines()
        if not lines or not lines[0].startswith("# "):
            return {}
        columns = lines[0][2:].split(",")
        rows = [dict(zip(columns, line.split(","), strict=False)) for line in lines[1:] if line]
        return {
            row["svname"]: row
            for row in rows
            if row.get("pxname") == BACKEND and row.get("svname") != "BACKEND"
        }

    def sessions(self) -> dict[str, int]:
        """Sessions each node was given, summed over the processes (`stot`)."""
        total: dict[str, int] = {}
        for index in range(self.processes):
            for name, row in self.stats(index).items():
                total[name] = total.get(name, 0) + int(row.get("stot") or 0)
        return total

    def log(self) -> str:
        if self._dir is None:
            return ""
        path = self._dir / "haproxy.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _stop_processes(self) -> None:
        procs, self._procs = self._procs, []
        for proc in procs:
            stop_process(proc)

    def stop(self) -> None:
        self._stop_processes()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

"""HAProxy and nginx run from the files in `deploy/`, on free loopback ports, so the
cluster tests exercise the configurations we ship, not copies of them."""

from __future__ import annotations

import os
import re
import shutil
import socket
import string
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from pushup.bench.targets.process import stop_process
from tests.helpers import wait_for

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
NGINX = "/usr/sbin/nginx"
INSTALL_HINT = "run scripts/install-test-deps.sh"
PORT_ATTEMPTS = 5


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Proxy:
    """A proxy process in a private directory of its own; its port is picked free just
    before it starts, so the rare loss of that race is retried."""

    name = ""

    def __init__(self) -> None:
        # Short: the HAProxy stats socket path must fit in a sockaddr_un.
        self.directory = Path(tempfile.mkdtemp(prefix=f"pushup-{self.name}-"))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        for attempt in range(PORT_ATTEMPTS):
            self.port = free_port()
            argv, env = self._command()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **env},
                )
            proc = self.proc
            try:
                wait_for(
                    lambda: proc.poll() is not None or self._ready(),  # noqa: B023
                    timeout=20.0,
                    what=f"{self.name} to serve",
                )
            except BaseException:
                self.stop()
                raise
            if proc.poll() is None:
                return
            text = self.log()
            if "ddress already in use" not in text or attempt == PORT_ATTEMPTS - 1:
                self.stop()
                raise AssertionError(f"{self.name} exited with {proc.returncode}:\n{text}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class HAProxy(_Proxy):
    """HAProxy on deploy/haproxy.cfg, unchanged: the nodes' addresses go in through the
    environment variables that file reads."""

    name = "haproxy"

    def __init__(self, nodes: list[str]) -> None:
        if len(nodes) != 3:
            raise ValueError("deploy/haproxy.cfg lists three nodes")
        self.binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not os.path.exists(self.binary):
            pytest.fail(f"haproxy is missing: {INSTALL_HINT}")
        super().__init__()
        self.nodes = nodes

    @property
    def socket_path(self) -> Path:
        return self.directory / "admin.sock"

    def _command(self) -> tuple[list[str], dict[str, str]]:
        env = {
            "PUSHUP_FRONTEND": f"127.0.0.1:{self.port}",
            "PUSHUP_HAPROXY_SOCKET": str(self.socket_path),
        }
        env.update({f"PUSHUP_NODE{i}": node for i, node in enumerate(self.nodes, 1)})
        # -db: stay in the foreground, log to stderr.
        return [self.binary, "-db", "-f", str(DEPLOY / "haproxy.cfg")], env

    def _ready(self) -> bool:
        return bool(self.socket_path.exists()) and all(
            status == "UP" for status in self.statuses().values()
        )

    def statuses(self) -> dict[str, str]:
        """Each node's state as the health checks see it: UP, DOWN, or on its way."""
        return {name: row["status"] for name, row in self.stats().items()}

    def stats(self) -> dict[str, dict[str, str]]:
        """The backend's servers, from `show stat` on the runtime API socket."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5.0)
                sock.connect(str(self.socket_path))
                sock.sendall(b"show stat\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError:
            return {}
        lines = b"".join(chunks).decode().splitlines()
        if not lines or not lines[0].startswith("# "):
            return {}
        columns = lines[0][2:].split(",")
        rows = [dict(zip(columns, line.split(","), strict=False)) for line in lines[1:] if line]
        return {
            row["svname"]: row
            for row in rows
            if row.get("pxname") == "pushup_nodes" and row["svname"] not in ("BACKEND",)
        }


class Nginx(_Proxy):
    """nginx on deploy/nginx.conf with its placeholders filled, as envsubst would."""

    name = "nginx"

    def __init__(self, node: str, webapp: str) -> None:
        if not os.path.exists(NGINX):
            pytest.fail(f"nginx is missing: {INSTALL_HINT}")
        super().__init__()
        self.node = node
        self.webapp = webapp

    def _command(self) -> tuple[list[str], dict[str, str]]:
        template = string.Template((DEPLOY / "nginx.conf").read_text())
        conf = template.safe_substitute(
            PUSHUP_LISTEN=f"127.0.0.1:{self.port}",
            PUSHUP_NODE=self.node,
            PUSHUP_WEBAPP=self.webapp,
        )
        left = re.findall(r"\$\{PUSHUP_[A-Z_]+\}", conf)
        assert not left, f"placeholders of deploy/nginx.conf left unfilled: {left}"
        path = self.directory / "nginx.conf"
        path.write_text(conf)
        # In the foreground; as root, workers stay root so they can use the private
        # directory (the shipped file leaves the user to the installation).
        extra = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
        argv = [NGINX, "-p", str(self.directory), "-c", str(path), "-e", str(self.log_path)]
        return [*argv, "-g", extra], {}

    def _ready(self) -> bool:
        try:
            response = httpx.get(f"{self.url}/pushup/health", timeout=1.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and response.json() == {"status": "ok"}

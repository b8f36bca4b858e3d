"""A real Redis Sentinel group on loopback ports of its own: one master, one replica
and three `redis-sentinel` processes (Debian's package) watching them, with short
timeouts so a failover takes a few seconds."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from tests.conftest import RedisServer
from tests.helpers import wait_for
from tests.proxies import free_port

SERVICE = "pushup"
# The master is down for the Sentinels after 1 s without an answer; a failover that
# stalls is given up and tried again after twice the failover timeout.
_DOWN_AFTER_MS = 1000
_FAILOVER_TIMEOUT_MS = 3000


def _binary() -> str:
    found = shutil.which("redis-sentinel")
    if found is None:
        pytest.fail("redis-sentinel is missing: run scripts/install-test-deps.sh")
    return found


class SentinelProcess:
    """One redis-sentinel with a config file of its own (it rewrites it as it learns)."""

    def __init__(self, directory: Path, master_port: int) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        (directory / "sentinel.conf").write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            "daemonize no\n"
            f"dir {directory}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {_DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {_FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )

    def start(self) -> None:
        with open(self.directory / "sentinel.log", "ab") as log:
            self.proc = subprocess.Popen(
                [_binary(), str(self.directory / "sentinel.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def master(self) -> dict[str, object] | None:
        """What this Sentinel knows of the master (None while it cannot be asked)."""
        proc = self.proc
        assert proc is not None
        if proc.poll() is not None:
            raise AssertionError(f"redis-sentinel exited with {proc.returncode}:\n{self.log()}")
        try:
            with redis.Redis(port=self.port, socket_timeout=1.0) as client:
                state: dict[str, object] = client.sentinel_master(SERVICE)
                return state
        except redis.RedisError:
            return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        path = self.directory / "sentinel.log"
        return path.read_text(errors="replace") if path.exists() else ""


class SentinelGroup:
    """The master, its replica and three Sentinels, all started and in agreement."""

    def __init__(self, directory: Path) -> None:
        self.redis = [RedisServer(self._home(directory, "master"))]
        self.redis.append(
            RedisServer(
                self._home(directory, "replica"), "--replicaof", "127.0.0.1", str(self.master.port)
            )
        )
        self.sentinels = [
            SentinelProcess(self._home(directory, f"sentinel-{n}"), self.master.port)
            for n in (1, 2, 3)
        ]

    @staticmethod
    def _home(directory: Path, name: str) -> Path:
        home = directory / name
        home.mkdir()
        return home

    @property
    def master(self) -> RedisServer:
        """The server that was the master when the group started."""
        return self.redis[0]

    @property
    def replica(self) -> RedisServer:
        return self.redis[1]

    def url(self, **options: str) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        query = "&".join(f"{key}={value}" for key, value in options.items())
        return f"redis+sentinel://{hosts}/{SERVICE}/0" + (f"?{query}" if query else "")

    def start(self) -> None:
        for server in self.redis:
            server.start()
        wait_for(self._replica_in_sync, timeout=20.0, what="the replica to sync")
        for sentinel in self.sentinels:
            sentinel.start()
        # Before any failover can be agreed on, every Sentinel must know the other two
        # (they find each other through the master every 2 s) and the replica.
        wait_for(self._agreed, timeout=30.0, interval=0.1, what="the Sentinels to meet")

    def _replica_in_sync(self) -> bool:
        with self.replica.client() as client:
            return client.info("replication").get("master_link_status") == "up"

    def _agreed(self) -> bool:
        for sentinel in self.sentinels:
            state = sentinel.master()
            if state is None or state["num-other-sentinels"] != 2 or state["num-slaves"] != 1:
                return False
        return True

    def master_port(self) -> int | None:
        """The port of the master every Sentinel names now, if they agree on one that
        is up."""
        ports = set()
        for sentinel in self.sentinels:
            state = sentinel.master()
            if state is None or state["is_sdown"] or state["is_odown"]:
                return None
            ports.add(int(str(state["port"])))
        return ports.pop() if len(ports) == 1 else None

    def replicate_everything(self) -> None:
        """Return once the replica has every write the master took so far: WAIT counts
        only this client's own writes, and replication keeps their order."""
        with self.master.client() as client:
            client.set("pushup-test:replicated", "1")
            assert client.wait(1, 10_000) == 1, "the replica did not confirm in 10 s"

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.redis:
            server.stop()

    def logs(self) -> str:
        parts = [f"--- sentinel {s.port}\n{s.log()}" for s in self.sentinels]
        parts += [f"--- redis {r.port}\n{r.log()}" for r in self.redis]
        return "\n".join(parts)

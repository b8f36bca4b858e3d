"""Several PushUp nodes on one shared engine behind HAProxy, as one benchmark target.

The paper's section 4.4 deployment: `nodes` `pushup serve` processes share one
redis-server (the Redis engine, no journal) or one nats-server (the NATS JetStream
engine, `engine="nats"`), and HAProxy (deploy/haproxy.cfg, see
`haproxy.py`) balances subscribers and publishers over them. Requests go to the
balancer; the per-node figures are read from each node directly (GET /channels/{id}
says how many polls are parked on the node that answers).

As behind any balancer, nodes take publisher requests only with the publisher key (the
balancer adds X-Forwarded-For), so the target makes one up and sends it; polls wait
50 s at most (`--max-timeout 60`, below the configuration's 65 s timeouts).
"""

from __future__ import annotations

import secrets

from pushup.bench.targets.haproxy import HAProxyGroup
from pushup.bench.targets.nats import NatsServer
from pushup.bench.targets.process import http_json
from pushup.bench.targets.pushup import PushUpTarget
from pushup.bench.targets.redis import RedisServer
from pushup.bench.targets.workers import local_subscribers


class ClusterTarget(PushUpTarget):
    """Polls and publications speak PushUp's API (inherited), through the balancer."""

    name = "pushup-cluster"

    def __init__(
        self, host: str = "127.0.0.1", nodes: int = 3, balancers: int = 1, engine: str = "redis"
    ) -> None:
        super().__init__(host)
        self.node_count = nodes
        self.balancers = balancers
        self.key = secrets.token_urlsafe(16)
        self.engine = engine
        self.engine_server: RedisServer | NatsServer = (
            NatsServer(host) if engine == "nats" else RedisServer(host)
        )
        self.nodes: list[PushUpTarget] = []
        self.proxy: HAProxyGroup | None = None
        # Polls parked on each node at the last `subscribers` call.
        self.spread: list[int | None] = []

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def start(self) -> None:
        try:
            self.engine_server.start()
            flags = ("--engine", self.engine_server.url, "--publisher-key", self.key)
            for _ in range(self.node_count):
                node = PushUpTarget(self.host, (*flags, "--max-timeout", "60"))
                self.nodes.append(node)
                node.start()
            addresses = [f"{self.host}:{node.port}" for node in self.nodes]
            self.proxy = HAProxyGroup(addresses, self.balancers, self.host)
            self.proxy.start()
            self.port = self.proxy.port
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        for node in self.nodes:
            node.stop()
        self.nodes = []
        self.engine_server.stop()

    def pids(self) -> list[int]:
        """The nodes and the balancer; the engine's server is counted apart."""
        pids = [pid for node in self.nodes for pid in node.pids()]
        return pids + (self.proxy.pids if self.proxy is not None else [])

    def create_channel(self) -> str:
        status, body = http_json(self.host, self.port, "POST", "/channels", {}, self.auth)
        if status != 201:
            raise RuntimeError(f"create channel failed: {status} {body}")
        return str(body["id"])

    def node_subscribers(self, channel: str) -> list[int | None]:
        """Polls parked on each node (None: that node did not answer)."""
        counts: list[int | None] = []
        for node in self.nodes:
            try:
                status, body = http_json(
                    self.host, node.port, "GET", f"/channels/{channel}", headers=self.auth
                )
                counts.append(local_subscribers(body) if status == 200 else None)
            except (OSError, ValueError, KeyError, TypeError):
                counts.append(None)
        return counts

    def subscribers(self, channel: str) -> int:
        """Polls parked on the whole cluster: the nodes' own counts, summed."""
        self.spread = self.node_subscribers(channel)
        if None in self.spread:
            raise RuntimeError(f"a node did not answer: {self.spread}")
        return sum(count or 0 for count in self.spread)

    def publish_request(self, channel: str, payload: bytes) -> bytes:
        body = b'{"channels":[%s],"data":%s}' % (channel.encode(), payload)
        return (
            b"POST /publish HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (self.host.encode(), self.key.encode(), len(body), body)
        )

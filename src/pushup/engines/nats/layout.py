"""Where the engine keeps its state in JetStream: one stream, its subjects, and how
the servers are named in an engine URL.

Control entries (channel records, closes, expiries, floors) live under `<root>.ctl.`,
each written as a rollup of its subject, so the control subjects are at once the log
every node replays and a compacted copy of the channels. A publication is stored once
per channel, on `<root>.msg.<channel id>`, with a per-message TTL; the stream
republishes each stored copy on a core subject of that channel (`live`), which only the
nodes serving the channel subscribe to.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from nats.js import api

# Seconds an entry outlives what it is about, so a lagging node still reads it.
MARGIN_S = 60
# Per-message TTLs are whole seconds; an entry is never kept longer than this.
_MAX_TTL_S = 10 * 365 * 86400


@dataclass(frozen=True, slots=True)
class Servers:
    """What `nats://host:port[,host:port...][?stream=NAME&replicas=N]` names."""

    urls: tuple[str, ...]
    stream: str
    replicas: int

    @classmethod
    def parse(cls, url: str) -> Servers:
        parts = urlsplit(url)
        hosts = [host.strip() for host in parts.netloc.split(",") if host.strip()]
        options = dict(parse_qsl(parts.query))
        stream = options.get("stream", "PUSHUP")
        # A stream is copied to as many servers as the URL names, up to three.
        replicas = int(options.get("replicas", min(len(hosts), 3)))
        return cls(tuple(f"nats://{host}" for host in hosts), stream, replicas)


@dataclass(frozen=True, slots=True)
class Subjects:
    """The subjects of one stream (its name, lower-cased, is their first token)."""

    root: str

    @classmethod
    def of(cls, stream: str) -> Subjects:
        return cls(stream.lower())

    @property
    def all(self) -> str:
        return f"{self.root}.>"

    @property
    def control(self) -> str:
        """Every control entry: what every node applies."""
        return f"{self.root}.ctl.>"

    @property
    def floor(self) -> str:
        """The id floors a starting node raises (ids only grow across nodes' clocks)."""
        return f"{self.root}.ctl.floor"

    @property
    def expiry(self) -> str:
        """Channels that expired, decided once by whichever node saw it first."""
        return f"{self.root}.ctl.expired"

    def channel(self, channel_id: int) -> str:
        """A channel's newest record (created, renewed), or its close."""
        return f"{self.root}.ctl.channel.{channel_id}"

    def messages(self, channel_id: int) -> str:
        """A channel's publications: one copy of each, in id order."""
        return f"{self.root}.msg.{channel_id}"

    def live(self, channel_id: int) -> str:
        """Where the stream republishes a channel's publications once stored: a core
        subject, heard only by the nodes serving the channel."""
        return f"_{self.root}.live.{channel_id}"

    def answer(self, digest: str) -> str:
        """The first answer to an idempotency key (its digest), written in the same
        atomic batch as the publication it answers, kept for the key's window."""
        return f"{self.root}.ans.{digest}"

    def kind(self, subject: str) -> str:
        """`floor`, `expired`, `channel`, `message` or `answer`."""
        tokens = subject[len(self.root) + 1 :].split(".", 2)
        if tokens[0] == "msg":
            return "message"
        return "answer" if tokens[0] == "ans" else tokens[1]


def stream_config(servers: Servers, subjects: Subjects) -> api.StreamConfig:
    return api.StreamConfig(
        name=servers.stream,
        subjects=[subjects.all],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        # A channel's subject keeps all its publications (each with its TTL); a
        # control subject keeps its newest entry, each written as a rollup.
        max_msgs_per_subject=-1,
        allow_rollup_hdrs=True,
        num_replicas=servers.replicas,
        allow_msg_ttl=True,
        allow_direct=True,
        allow_atomic=True,
        republish=api.RePublish(
            src=f"{subjects.root}.msg.*", dest=f"_{subjects.root}.live.{{{{wildcard(1)}}}}"
        ),
        discard=api.DiscardPolicy.OLD,
    )


def ttl(seconds: float) -> int:
    """A per-message TTL in whole seconds, with the margin."""
    return int(min(seconds + MARGIN_S, _MAX_TTL_S))

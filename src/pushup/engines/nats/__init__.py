"""The NATS JetStream engine: channels and messages in one JetStream stream that every
node replays into memory, for several nodes."""

from pushup.engines.nats.engine import NatsEngine

__all__ = ["NatsEngine"]

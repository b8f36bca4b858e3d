"""The NATS JetStream engine: channels and messages in one JetStream stream, for several
nodes; each node holds every channel and the messages of the channels it serves."""

from pushup.engines.nats.engine import NatsEngine

__all__ = ["NatsEngine"]

"""The shared engine for several processes and nodes: state in Redis."""

from pushup.engines.redis.engine import RedisEngine

__all__ = ["RedisEngine"]

"""The embedded engine: channels and messages in this process, optionally journaled
to a data directory."""

from pushup.engines.memory.engine import MemoryEngine
from pushup.engines.memory.journal import Journal

__all__ = ["Journal", "MemoryEngine"]

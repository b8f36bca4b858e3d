"""PushUp: an event-driven, dedicated long-polling publish/subscribe server."""

__version__ = "0.1.0"

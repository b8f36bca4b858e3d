"""Logging set-up: plain text or one JSON object per line (`--log-format json`),
each line naming its process and, while a request is handled, the request's id.

A record may carry `facts` (`extra={"facts": {name: value}}`), as the start-up banner
does: text logs write one indented `name: value` line for each under the message,
JSON logs make each a field of the record's one object."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

import orjson

from pushup.observe.requests import current_id

FORMATS = ("text", "json")
FACTS = "facts"

# What every LogRecord has; anything else on a record came as `extra` and is logged.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class _RequestIdFilter(logging.Filter):
    """Adds the id of the request being handled (made now if it had none yet)."""

    def __init__(self, worker: str | None) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_id()
        record.worker = self.worker
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = getattr(record, "request_id", None)
        if rid is not None:
            text = f"{text} [request {rid}]"
        facts: dict[str, Any] = getattr(record, FACTS, None) or {}
        width = max((len(name) for name in facts), default=0) + 1
        for name, value in facts.items():
            text += f"\n  {name.replace('_', ' ') + ':':<{width}} {value}"
        return text


class JsonFormatter(logging.Formatter):
    """One object per line: time, level, logger, message, pid, worker, request_id,
    the record's extra fields, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process or os.getpid(),
        }
        extra = dict(record.__dict__)
        extra.update(extra.pop(FACTS, None) or {})
        for key, value in extra.items():
            if key not in _STANDARD and value is not None and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = "".join(traceback.format_exception(*record.exc_info))
        if record.stack_info:
            entry["stack"] = record.stack_info
        return orjson.dumps(entry, default=str).decode()


def setup(level: str, log_format: str = "text", *, worker: str | None = None) -> None:
    """Log to stderr at `level` in `log_format` (`text` or `json`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(_RequestIdFilter(worker))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)

"""Validation at the edge: JSON bodies and query strings to typed values, or 400s."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from pushup.core.model import MAX_ID, ChannelRef, MessageId
from pushup.http.errors import (
    InvalidBody,
    InvalidCursor,
    InvalidJson,
    InvalidParameter,
    MessageTooLarge,
    TooManyChannels,
)

# Defaults of --max-channels-per-request and --max-message-bytes.
MAX_CHANNELS = 100
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_BATCH = 1000
MAX_NAME_LENGTH = 200

_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def channel_ref(value: object, error: type[InvalidBody | InvalidParameter]) -> ChannelRef:
    """A channel id (positive integer, or all-digit string) or a channel name."""
    if isinstance(value, bool):
        raise error(f"channel {value!r} is neither an id nor a name")
    if isinstance(value, int):
        if not 1 <= value <= MAX_ID:
            raise error(f"channel id {value} is out of range")
        return value
    if isinstance(value, str):
        if is_digits(value):
            return channel_ref(int(value), error)
        check_name(value, error)
        return value
    raise error(f"channel {value!r} is neither an id nor a name")


def path_channel(segment: str) -> ChannelRef:
    """The channel named by a (percent-decoded) path segment."""
    return channel_ref(segment, InvalidParameter)


def check_name(name: str, error: type[InvalidBody | InvalidParameter] = InvalidBody) -> None:
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise error(f"a channel name has 1 to {MAX_NAME_LENGTH} characters")
    if "," in name:
        raise error("a channel name may not contain a comma")
    if is_digits(name):
        raise error("a channel name may not be all digits")


def json_body(body: bytes | bytearray, *, optional: bool = False) -> dict[str, Any]:
    """The request body as a JSON object."""
    if optional and not body.strip():
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidBody("the body must be a JSON object")
    return value


def only_fields(obj: Mapping[str, Any], allowed: set[str], where: str = "the body") -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise InvalidBody(f"{where} has unknown fields: {', '.join(unknown)}")


def ttl(obj: Mapping[str, Any]) -> float | None:
    if "ttl" not in obj:
        return None
    value = obj["ttl"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidBody("ttl must be a number of seconds")
    if not (0 < value < math.inf):
        raise InvalidBody("ttl must be a finite number of seconds above 0")
    return float(value)


def name(obj: Mapping[str, Any]) -> str | None:
    value = obj.get("name")
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidBody("name must be a string")
    check_name(value)
    return value


def publication(
    obj: object,
    where: str = "the body",
    *,
    max_channels: int = MAX_CHANNELS,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> tuple[list[ChannelRef], bytes]:
    """One `{"channels": [...], "data": ...}` item: its channels and encoded data."""
    if not isinstance(obj, dict):
        raise InvalidBody(f"{where} must be a JSON object")
    only_fields(obj, {"channels", "data"}, where)
    if "data" not in obj:
        raise InvalidBody(f"{where} needs a data field")
    channels = obj.get("channels")
    if not isinstance(channels, list) or not channels:
        raise InvalidBody(f"channels in {where} must be a non-empty list")
    refs = channel_list(channels, InvalidBody, max_channels)
    data = orjson.dumps(obj["data"])
    if len(data) > max_bytes:
        raise MessageTooLarge(
            f"the data in {where} is {len(data)} bytes as JSON, over the limit of {max_bytes}"
        )
    # orjson hands back its 4 KiB working buffer as the bytes object; a cached message
    # keeps only a copy of the right size.
    return refs, memoryview(data).tobytes()


def channel_list(
    values: list[Any],
    error: type[InvalidBody | InvalidParameter],
    max_channels: int = MAX_CHANNELS,
) -> list[ChannelRef]:
    if len(values) > max_channels:
        raise TooManyChannels(f"at most {max_channels} channels per request, not {len(values)}")
    refs = [channel_ref(value, error) for value in values]
    if len(set(refs)) != len(refs):
        raise error("channels must not repeat")
    return refs


def batch(
    obj: Mapping[str, Any],
    *,
    max_channels: int = MAX_CHANNELS,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> list[tuple[list[ChannelRef], bytes]]:
    only_fields(obj, {"messages"})
    items = obj.get("messages")
    if not isinstance(items, list) or not items:
        raise InvalidBody("messages must be a non-empty list")
    if len(items) > MAX_BATCH:
        raise InvalidBody(f"at most {MAX_BATCH} messages per batch")
    return [
        publication(item, f"messages[{i}]", max_channels=max_channels, max_bytes=max_bytes)
        for i, item in enumerate(items)
    ]


def query(text: str, known: set[str]) -> dict[str, str]:
    """The known parameters of a query string; each may appear once."""
    found: dict[str, str] = {}
    if "%" in text or "+" in text:
        try:
            pairs = parse_qsl(text, keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            raise InvalidParameter("the query string is not valid UTF-8") from None
    else:  # nothing to decode, as in most polls: split without the general parser
        pairs = [
            (key, value)
            for key, _, value in (part.partition("=") for part in text.split("&"))
            if key or value
        ]
    for key, value in pairs:
        if key in known:
            if key in found:
                raise InvalidParameter(f"{key} is given more than once")
            found[key] = value
    return found


def seconds(text: str, param: str) -> float:
    """A non-negative, finite number of (epoch) seconds from a query parameter."""
    if not _NUMBER.fullmatch(text):
        raise InvalidParameter(f"{param} must be a number")
    value = float(text)
    if not math.isfinite(value):
        raise InvalidParameter(f"{param} must be a finite number")
    if value < 0:
        raise InvalidParameter(f"{param} must not be negative")
    # No message is later than the largest id's time (ids are microseconds): a larger
    # bound means the same, and would overflow once turned into an id.
    return min(value, _LATEST_S)


_LATEST_S = MAX_ID / 1_000_000


def cursor(text: str) -> MessageId:
    if not is_digits(text) or len(text) > 16 or int(text) > MAX_ID:
        raise InvalidCursor("since must be a cursor from an earlier response")
    return MessageId(int(text))

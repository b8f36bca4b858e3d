"""Validation at the edge: JSON bodies and query strings to typed values, or 400s."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from pushup.core.channels import RESERVED_PREFIX, reserved
from pushup.core.events import EVENTS_CHANNEL
from pushup.core.model import MAX_ID, SERVER_RETENTION, ChannelRef, MessageId, Retention
from pushup.http.errors import (
    AboveServerLimit,
    InvalidBody,
    InvalidCursor,
    InvalidIdempotencyKey,
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
MAX_IDEMPOTENCY_KEY_LENGTH = 255

# Visible ASCII: what UUIDs, ULIDs, base64 and hex keys are written with.
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]+", re.ASCII)

_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)

# Integers the API carries exactly: what orjson reads as an int. Past these it silently
# reads a float, which it writes back in exponent form ("1e+20").
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_ID_DIGITS = len(str(MAX_ID))


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
            # Longer than any id: out of range, and never converted (a 5,000-digit
            # string would cost a quadratic int() and hit Python's digit limit).
            if len(value) > _ID_DIGITS and len(value.lstrip("0")) > _ID_DIGITS:
                raise error(f"channel id {value[:20]}... is out of range")
            number = int(value)
            if not 1 <= number <= MAX_ID:
                raise error(f"channel id {number} is out of range")
            return number
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


def idempotency_key(value: str | None) -> str | None:
    """An `Idempotency-Key` header's value, or None without one."""
    if value is None:
        return None
    key = value.strip()
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidIdempotencyKey(
            f"an Idempotency-Key has 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters"
        )
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidIdempotencyKey(
            "an Idempotency-Key is visible ASCII characters (no spaces), such as a UUID"
        )
    return key


def json_body(body: bytes | bytearray, *, optional: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, refused when it says something orjson would
    read differently from what was written: a key twice, an integer past 64 bits."""
    if optional and not body.strip():
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJson(f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidBody("the body must be a JSON object")
    if _maybe_misread(body, value):
        _check_strictly(body)
    return value


def _maybe_misread(body: bytes | bytearray, value: object) -> bool:
    """False only if orjson's value says all the body said, in a few C calls.

    Every key comes with one colon outside strings. Without `\\u` escapes (a colon may
    be written `\\u003a`) the body has as many colons as its keys plus those in its
    strings; re-encoded, the value has its kept keys plus the colons of the strings it
    kept, so a key given twice shows as a missing colon. An integer past 64 bits came
    back a float of at least 2**63, which orjson writes with an exponent ("e+").
    """
    encoded = orjson.dumps(value)
    return b"e+" in encoded or b"\\u" in body or body.count(b":") != encoded.count(b":")


def _check_strictly(body: bytes | bytearray) -> None:
    """Read the body again keeping every key and integer as written (slow, and rare)."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, item in items:
            if key in obj:
                raise InvalidBody(f"the key {key!r} appears more than once in one object")
            obj[key] = item
        return obj

    def integer(text: str) -> int:
        # JSON has no leading zeros: past 21 characters ("-" and 20 digits) it cannot
        # fit, and is not converted (int() refuses past 4,300 digits).
        if len(text) > 21 or not _INT_MIN <= int(text) <= _INT_MAX:
            shown = text if len(text) <= 24 else f"{text[:20]}... ({len(text)} digits)"
            raise InvalidBody(f"integers must fit in 64 bits, not {shown}")
        return int(text)

    try:
        json.loads(body, object_pairs_hook=pairs, parse_int=integer)
    except RecursionError:
        raise InvalidBody("the body is nested too deeply") from None
    except ValueError as exc:  # what orjson read, this parser should too
        raise InvalidJson(f"the body is not valid JSON: {exc}") from None


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


def retention(obj: Mapping[str, Any], max_ttl_s: float, max_messages: int) -> Retention:
    """A channel's own `message_ttl` and `max_messages`, each at most the server's
    (`--message-ttl`, `--max-messages`): a channel may keep less, never more."""
    if "message_ttl" not in obj and "max_messages" not in obj:
        return SERVER_RETENTION
    keep_s = obj.get("message_ttl")
    if keep_s is not None:
        if isinstance(keep_s, bool) or not isinstance(keep_s, int | float):
            raise InvalidBody("message_ttl must be a number of seconds")
        if not 0 < keep_s < math.inf:
            raise InvalidBody("message_ttl must be a finite number of seconds above 0")
        if keep_s > max_ttl_s:
            raise AboveServerLimit(
                f"message_ttl {keep_s:g} is above this server's --message-ttl of {max_ttl_s:g}"
            )
        keep_s = float(keep_s)
    cap = obj.get("max_messages")
    if cap is not None:
        # 3.0 is a whole number too, as JSON Schema counts.
        if isinstance(cap, float) and cap.is_integer():
            cap = int(cap)
        if isinstance(cap, bool) or not isinstance(cap, int):
            raise InvalidBody("max_messages must be a whole number")
        if cap < 1:
            raise InvalidBody("max_messages must be at least 1")
        if cap > max_messages:
            raise AboveServerLimit(
                f"max_messages {cap} is above this server's --max-messages of {max_messages}"
            )
    return Retention(keep_s, cap)


# Channels per page of `GET /channels`: by default, and at most.
LIST_LIMIT = 50
MAX_LIST_LIMIT = 200


def listing(text: str) -> tuple[str | None, ChannelRef | None, int]:
    """`GET /channels`' query: the name prefix (None: every channel, by id), the cursor
    of the page before (an id, or a name with a prefix), and the page size."""
    found = query(text, {"prefix", "after", "limit"})
    prefix: str | None = found.get("prefix") or None
    if prefix is not None and len(prefix) > MAX_NAME_LENGTH:
        raise InvalidParameter(f"prefix has at most {MAX_NAME_LENGTH} characters")
    limit = LIST_LIMIT
    if "limit" in found:
        raw = found["limit"]
        if not is_digits(raw) or len(raw) > 9 or not 1 <= int(raw) <= MAX_LIST_LIMIT:
            raise InvalidParameter(f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}")
        limit = int(raw)
    after: str | None = found.get("after") or None
    if after is None or prefix is not None:
        return prefix, after, limit  # with a prefix, the last name of the page before
    if not is_digits(after) or len(after) > _ID_DIGITS or not 1 <= int(after) <= MAX_ID:
        raise InvalidParameter("after must be the next of the page before: a channel id")
    return prefix, int(after), limit


def flag(obj: Mapping[str, Any], field: str) -> bool:
    """An optional boolean field (false when absent)."""
    value = obj.get(field, False)
    if not isinstance(value, bool):
        raise InvalidBody(f"{field} must be true or false")
    return value


def name(obj: Mapping[str, Any]) -> str | None:
    """A new channel's name; names starting with `$` are the server's own."""
    value = obj.get("name")
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidBody("name must be a string")
    check_name(value)
    if reserved(value):
        raise InvalidBody(
            f"names starting with {RESERVED_PREFIX} are reserved for the server's own "
            f"channels ({EVENTS_CHANNEL})"
        )
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
    if len(refs) > 1 and len(set(refs)) != len(refs):
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
    if text.isascii() and text.isdigit() and len(text) < 16:  # most timeouts: "30"
        return min(float(text), _LATEST_S)
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
    if not is_digits(text) or len(text) > 16 or (value := int(text)) > MAX_ID:
        raise InvalidCursor("since must be a cursor from an earlier response")
    return MessageId(value)

"""`mint_token`: the subscriber tokens a web application hands to a page, made exactly as
a server started with `--subscriber-secret` checks them (docs/security.md): HS256, a
`channels` claim and an `exp`, no audience. Arguments the server would refuse, or
that would make a token it refuses, are refused here, where the mistake is made."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping

import jwt

from pushup.client.wire import ChannelRef

ALGORITHM = "HS256"
# RFC 7518 §3.2: an HS256 key has at least the hash's 256 bits; the server refuses a
# shorter --subscriber-secret at start.
MIN_SECRET_BYTES = 32
# Long enough for a page to open its subscription, short enough that a leaked token
# soon stops reading (there is no revocation list).
DEFAULT_TTL_S = 600.0
# What the server accepts as a channel in the claim (as in a request).
MAX_CHANNEL_ID = 2**53 - 1
MAX_NAME_LENGTH = 200


def mint_token(
    secret: str | bytes,
    channels: ChannelRef | Iterable[ChannelRef],
    *,
    ttl: float = DEFAULT_TTL_S,
    subject: str | None = None,
    now: float | None = None,
) -> str:
    """A subscriber token that lets its bearer read `channels` (one id or name, or a
    list of them) for `ttl` seconds.

    `secret` is the server's `--subscriber-secret` (`PUSHUP_SUBSCRIBER_SECRET`), at
    least 32 bytes. `subject`, if given, becomes the `sub` claim (the user it was minted
    for, for the application's own records; the server does not read it). `now` is the
    minting time in epoch seconds (default: this machine's clock). Raises `TypeError`
    or `ValueError`, naming the argument, for anything the server would refuse."""
    key = _key(secret)
    granted = _channels(channels)
    ttl_s = _ttl(ttl)
    issued_at = time.time() if now is None else _now(now)
    claims: dict[str, object] = {
        "channels": granted,
        # Rounded up and down: the token never lasts less than `ttl`, and is never
        # issued in the future.
        "exp": math.ceil(issued_at + ttl_s),
        "iat": math.floor(issued_at),
    }
    if subject is not None:
        claims["sub"] = _subject(subject)
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, str):
        key = secret.encode()
    elif isinstance(secret, bytes):
        key = secret
    else:
        raise TypeError(f"secret must be a str or bytes, not {type(secret).__name__}")
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(
            f"secret must be at least {MIN_SECRET_BYTES} bytes long, as the server's "
            f"--subscriber-secret is (this one has {len(key)})"
        )
    return key


def _channels(channels: ChannelRef | Iterable[ChannelRef]) -> list[ChannelRef]:
    if isinstance(channels, int | str):
        refs: list[ChannelRef] = [channels]
    elif isinstance(channels, Iterable) and not isinstance(channels, bytes | bytearray | Mapping):
        refs = list(channels)
    else:
        raise TypeError(
            "channels must be a channel id or name, or a list of them, "
            f"not {type(channels).__name__}"
        )
    if not refs:
        raise ValueError("channels must name at least one channel")
    for ref in refs:
        _check_channel(ref)
    return refs


def _check_channel(ref: object) -> None:
    if isinstance(ref, bool) or not isinstance(ref, int | str):
        raise TypeError(f"channels: {ref!r} is neither a channel id (int) nor a name (str)")
    if isinstance(ref, str) and not (ref.isascii() and ref.isdigit()):
        if not 1 <= len(ref) <= MAX_NAME_LENGTH:
            raise ValueError(f"channels: a channel name has 1 to {MAX_NAME_LENGTH} characters")
        if "," in ref:
            raise ValueError(f"channels: a channel name may not contain a comma ({ref!r})")
        return
    # An id, or an all-digit string, which the server reads as one (and a longer one
    # than any id as out of range, never converted).
    digits = str(ref).lstrip("0")
    if len(digits) > len(str(MAX_CHANNEL_ID)) or not 1 <= int(digits or "0") <= MAX_CHANNEL_ID:
        raise ValueError(f"channels: channel id {str(ref)[:20]} is out of range (1 to 2**53 - 1)")


def _ttl(ttl: float) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError(f"ttl must be a number of seconds, not {type(ttl).__name__}")
    if not (0 < ttl < math.inf):  # also false for NaN
        raise ValueError(f"ttl must be a positive, finite number of seconds, not {ttl}")
    return float(ttl)


def _now(now: float) -> float:
    if isinstance(now, bool) or not isinstance(now, int | float):
        raise TypeError(f"now must be epoch seconds, not {type(now).__name__}")
    if not (0 <= now < math.inf):
        raise ValueError(f"now must be epoch seconds, not {now}")
    return float(now)


def _subject(subject: str) -> str:
    if not isinstance(subject, str):
        raise TypeError(f"subject must be a str, not {type(subject).__name__}")
    if not subject:
        raise ValueError("subject must not be empty (leave it out instead)")
    return subject

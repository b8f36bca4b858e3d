"""`--publisher-keys FILE`: the publisher keys of several applications sharing one
server, read from a TOML file once, at start (the supervisor reads it for its workers).

    [keys.blog]
    secret = "..."             # 32+ visible ASCII characters, sent as a bearer token
    prefixes = ["blog:"]       # the channel names it may create and use
    [keys.ops]
    secret = "..."
    prefixes = [""]            # "": every channel, as --publisher-key alone is
    admin = true               # may also read /metrics and /dashboard

A problem is one ValueError phrased to follow the option's name; it never quotes a
secret.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pushup.core.tenants import PublisherKey, PublisherKeys

# A key's name is a metrics label and a log field: short, plain, bounded by the file.
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Visible ASCII: a secret travels as a bearer token in a header, never altered.
_SECRET = re.compile(r"[\x21-\x7e]+")
MIN_SECRET_BYTES = 32
_FIELDS = frozenset({"secret", "prefixes", "admin"})


def load_keys(path_text: str) -> PublisherKeys:
    """The keys of the file at `path_text`, checked (see `check_keys`)."""
    path = Path(path_text)
    try:
        text = path.read_bytes().decode()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from None
    try:
        keys = PublisherKeys(_keys(document), source=str(path))
        check_keys(keys)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return keys


def check_keys(keys: PublisherKeys) -> None:
    """At least one key; names fit for metrics; secrets long enough, distinct, and fit
    for a header; prefixes given."""
    if not keys.keys:
        raise ValueError("names no key: add a [keys.NAME] table with a secret and prefixes")
    names: set[str] = set()
    owners: dict[str, str] = {}
    for key in keys.keys:
        if not _NAME.fullmatch(key.name):
            raise ValueError(
                f"key name {key.name[:80]!r} must be 1 to 64 letters, digits, '_', '.' or '-'"
            )
        if key.name in names:
            raise ValueError(f"key {key.name!r} is given twice")
        names.add(key.name)
        if len(key.secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"the secret of key {key.name!r} is too short: at least {MIN_SECRET_BYTES} bytes"
            )
        if not _SECRET.fullmatch(key.secret):
            raise ValueError(
                f"the secret of key {key.name!r} must be visible ASCII characters, no spaces"
            )
        other = owners.setdefault(key.secret, key.name)
        if other != key.name:
            raise ValueError(
                f"keys {other!r} and {key.name!r} have the same secret: each needs its own"
            )
        if not key.prefixes:
            raise ValueError(
                f'the prefixes of key {key.name!r} are empty: list at least one ("" for every '
                "channel)"
            )


def _keys(document: dict[str, Any]) -> tuple[PublisherKey, ...]:
    unknown = sorted(set(document) - {"keys"})
    if unknown:
        raise ValueError(f"unknown table or field {unknown[0]!r}: keys go in [keys.NAME] tables")
    tables = document.get("keys", {})
    if not isinstance(tables, dict):
        raise ValueError("keys must be tables: [keys.NAME]")
    return tuple(_key(name, table) for name, table in tables.items())


def _key(name: str, table: object) -> PublisherKey:
    if not isinstance(table, dict):
        raise ValueError(f"key {name!r} must be a table: [keys.{name}]")
    unknown = sorted(set(table) - _FIELDS)
    if unknown:
        raise ValueError(
            f"key {name!r} has an unknown field {unknown[0]!r} (secret, prefixes, admin)"
        )
    secret = table.get("secret")
    if not isinstance(secret, str):
        raise ValueError(f"key {name!r} needs a secret, a string")
    prefixes = table.get("prefixes")
    if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
        raise ValueError(f'key {name!r} needs prefixes, a list of strings ("" for every channel)')
    admin = table.get("admin", False)
    if not isinstance(admin, bool):
        raise ValueError(f"admin of key {name!r} must be true or false")
    return PublisherKey(name, secret, tuple(dict.fromkeys(prefixes)), admin)

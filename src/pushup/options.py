"""Options declared once: a `Settings` field made with `option()` is a `pushup serve` option.

The field carries its help, its group and its check; the rest follows from the field:
the flag is its name without a unit suffix (`message_ttl_s` is `--message-ttl`) unless
`name` says otherwise, the variable is `PUSHUP_` and the flag in capitals
(`PUSHUP_MESSAGE_TTL`), and the default is the field's own. The CLI builds its flags and
grouped help from `options()`, and `build()` reads flags and variables through them, so
an error names what the user typed rather than the field behind it.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")
S = TypeVar("S")

PREFIX = "PUSHUP_"
# The groups of `pushup serve --help`, in order, with their headings.
GROUPS = {
    "server": "Server",
    "cache": "Cache",
    "limits": "Limits",
    "security": "Security",
    "cluster": "Cluster",
    "logging": "Logging",
}
# Units dropped from a field's name to make its flag.
_UNIT_SUFFIXES = ("_s",)
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})
_KEY = "pushup.option"


class SettingError(ValueError):
    """A field's value is wrong: `problem` says how, phrased to follow the field's name."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


class OptionError(ValueError):
    """A flag or variable the user gave is wrong; the message names it."""

    def __init__(self, given_as: str, problem: str) -> None:
        super().__init__(f"{given_as} {problem}")
        self.given_as = given_as


@dataclass(frozen=True, slots=True)
class _Declared:
    """What `option()` was told; `options()` completes it from the field."""

    help: str
    group: str
    name: str | None
    parse: Callable[[str], Any] | None
    check: Callable[[Any], None] | None
    choices: tuple[str, ...]
    metavar: str | None


@dataclass(frozen=True, slots=True)
class Option:
    """One option, complete: its field, how users give it, and how it is read."""

    field: str
    default: Any
    help: str
    group: str
    name: str
    # The value's type before `parse`: bool makes a --x/--no-x switch.
    kind: type
    parse: Callable[[str], Any]
    check: Callable[[Any], None] | None
    choices: tuple[str, ...]
    metavar: str

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def env(self) -> str:
        return PREFIX + self.name.upper().replace("-", "_")

    @property
    def shown_default(self) -> str | None:
        """The default as a user would write it, or None when there is none to show."""
        value = self.default
        if value is None or value in ((), ""):
            return None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return format(value, "g")
        return str(value)

    def validate(self, value: Any) -> None:
        """Raise SettingError unless `value` is one this field takes."""
        if value is None:
            return
        try:
            if self.choices and value not in self.choices:
                raise ValueError(f"must be one of {', '.join(self.choices)}, not {value!r}")
            if self.check is not None:
                self.check(value)
        except ValueError as exc:
            raise SettingError(self.field, str(exc)) from None


def option(
    default: T,
    help: str,
    *,
    group: str,
    name: str | None = None,
    parse: Callable[[str], Any] | None = None,
    check: Callable[[Any], None] | None = None,
    choices: tuple[str, ...] = (),
    metavar: str | None = None,
) -> T:
    """A dataclass field that is also an option; `parse` turns the text a user typed
    into the value (by default from the field's type), `check` raises ValueError."""
    if group not in GROUPS:
        raise TypeError(f"unknown option group {group!r}")
    declared = _Declared(help, group, name, parse, check, choices, metavar)
    return field(default=default, metadata={_KEY: declared})


def options(cls: type) -> tuple[Option, ...]:
    """The options of a dataclass made with `option()`, in field order."""
    hints = get_type_hints(cls)
    found = []
    for f in fields(cls):
        declared = f.metadata.get(_KEY)
        if declared is None:
            continue
        kind = _value_type(hints[f.name])
        parse = declared.parse or _PARSERS.get(kind)
        if parse is None:
            raise TypeError(f"option {f.name} of type {kind.__name__} needs a parse function")
        name = declared.name or _flag_name(f.name)
        found.append(
            Option(
                field=f.name,
                default=f.default,
                help=declared.help,
                group=declared.group,
                name=name,
                kind=kind,
                parse=parse,
                check=declared.check,
                choices=declared.choices,
                metavar=declared.metavar or _metavar(f.name, kind, declared.choices),
            )
        )
    return tuple(found)


def validate(settings: object) -> None:
    """Check every option field of `settings`; SettingError names the first bad one."""
    for opt in options(type(settings)):
        opt.validate(getattr(settings, opt.field))


def build(cls: type[S], environ: Mapping[str, str], given: Mapping[str, Any]) -> S:
    """`cls` from flags (`given`, by field: the text typed, or a switch's bool; None when
    absent), else the variables in `environ` (empty counts as unset), else defaults.

    Raises OptionError naming the flag or variable a bad value came from."""
    specs = options(cls)
    values: dict[str, Any] = {}
    for opt in specs:
        raw, where = _given(opt, environ, given)
        if raw is None:
            continue
        try:
            values[opt.field] = raw if isinstance(raw, bool) else opt.parse(raw)
        except ValueError as exc:
            raise OptionError(where, str(exc)) from None
    try:
        return cls(**values)
    except SettingError as exc:
        raise OptionError(given_as(cls, exc.field, environ, given), exc.problem) from None


def given_as(cls: type, field: str, environ: Mapping[str, str], given: Mapping[str, Any]) -> str:
    """How the user gave `field`: its flag if given, else its variable if set, else (a
    default) its flag; so a later error about the value names what to change."""
    for opt in options(cls):
        if opt.field == field:
            return _given(opt, environ, given)[1]
    return field


def _given(opt: Option, environ: Mapping[str, str], given: Mapping[str, Any]) -> tuple[Any, str]:
    """The raw value of `opt` (None when unset) and the flag or variable it came from."""
    raw = given.get(opt.field)
    if raw is not None:
        return raw, opt.flag
    # Blank is unset, as click has it: a unit file may blank a variable.
    raw = environ.get(opt.env) or None
    return raw, opt.flag if raw is None else opt.env


# -- checks: each raises ValueError with a phrase that follows the option's name ---------


def at_least(low: int) -> Callable[[int], None]:
    def check(value: int) -> None:
        if value < low:
            raise ValueError(f"must be at least {low}")

    return check


def between(low: int, high: int) -> Callable[[int], None]:
    def check(value: int) -> None:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")

    return check


def not_negative(value: int) -> None:
    if value < 0:
        raise ValueError("must not be negative")


def seconds(value: float) -> None:
    """A timeout or interval; the cap keeps deadlines far from float and C limits."""
    if not (0 < value <= 1e9):  # also false for NaN
        raise ValueError("must be a positive number of seconds, at most 1e9")


def not_empty(value: str) -> None:
    if value == "":
        raise ValueError("must not be empty")


# -- parsing the text of a flag or variable ------------------------------------------------


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"must be a whole number, not {text!r}") from None


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"must be a number, not {text!r}") from None


def _parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"must be true or false (1/0, yes/no, on/off), not {text!r}")


def none_if_empty(text: str) -> str | None:
    """For options where an empty value means the same as none given."""
    return text or None


_PARSERS: dict[type, Callable[[str], Any]] = {
    bool: _parse_bool,
    int: _parse_int,
    float: _parse_float,
    str: str,
}


def _value_type(hint: Any) -> type:
    """`int` for `int` and `int | None`; the hint's origin (`tuple`) otherwise."""
    if get_origin(hint) in (Union, types.UnionType):
        hint = next(arg for arg in get_args(hint) if arg is not type(None))
    origin = get_origin(hint) or hint
    if not isinstance(origin, type):
        raise TypeError(f"cannot make an option of {hint!r}")
    return origin


def _flag_name(field_name: str) -> str:
    for suffix in _UNIT_SUFFIXES:
        field_name = field_name.removesuffix(suffix)
    return field_name.replace("_", "-")


def _metavar(field_name: str, kind: type, choices: tuple[str, ...]) -> str:
    if choices:
        return "|".join(choices)
    if field_name.endswith("_s"):
        return "SEC"
    if field_name.endswith("_bytes"):
        return "BYTES"
    return {int: "N", float: "NUM"}.get(kind, "TEXT")

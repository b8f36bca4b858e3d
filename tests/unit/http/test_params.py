"""Validation at the edge: every bad input is the right 400, good input the right value."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushup.core.model import MAX_ID
from pushup.http import params
from pushup.http.errors import (
    InvalidBody,
    InvalidCursor,
    InvalidJson,
    InvalidParameter,
    MessageTooLarge,
    TooManyChannels,
)

# -- channel references and names --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (17, 17),
        (1, 1),
        (MAX_ID, MAX_ID),
        ("17", 17),
        ("0017", 17),
        (str(MAX_ID), MAX_ID),
        ("tag:c++", "tag:c++"),
        ("a1", "a1"),
        ("1a", "1a"),
        ("x" * 200, "x" * 200),
        ("é", "é"),
    ],
)
def test_channel_ref_accepts_ids_and_names(value: object, expected: object) -> None:
    ref = params.channel_ref(value, InvalidParameter)
    assert ref == expected
    assert type(ref) is type(expected)


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        MAX_ID + 1,
        "0",
        str(MAX_ID + 1),
        True,
        False,
        1.0,
        1.5,
        None,
        [1],
        {"id": 1},
        "",
        "x" * 201,
        "a,b",
        ",",
    ],
)
@pytest.mark.parametrize("error", [InvalidParameter, InvalidBody])
def test_channel_ref_rejects_with_the_given_error(
    value: object, error: type[InvalidBody | InvalidParameter]
) -> None:
    with pytest.raises(error):
        params.channel_ref(value, error)


def test_path_channel_is_a_parameter() -> None:
    assert params.path_channel("42") == 42
    assert params.path_channel("tag:c++") == "tag:c++"
    with pytest.raises(InvalidParameter):
        params.path_channel("")


@pytest.mark.parametrize("name", ["a", "x" * 200, "tag:c++", "1.5", "-1", " 1"])
def test_check_name_accepts(name: str) -> None:
    params.check_name(name)


@pytest.mark.parametrize("name", ["", "x" * 201, "a,b", ",", "123", "0"])
def test_check_name_rejects(name: str) -> None:
    with pytest.raises(InvalidBody):
        params.check_name(name)
    with pytest.raises(InvalidParameter):
        params.check_name(name, InvalidParameter)


def test_channel_list() -> None:
    assert params.channel_list([1, "2", "b"], InvalidBody) == [1, 2, "b"]
    assert params.channel_list(list(range(1, 101)), InvalidBody) == list(range(1, 101))
    for bad in ([1, 1], [1, "1"], ["b", "b"], ["1", "", "2"]):
        with pytest.raises(InvalidParameter):
            params.channel_list(bad, InvalidParameter)
    with pytest.raises(TooManyChannels):
        params.channel_list(list(range(1, 102)), InvalidParameter)
    assert params.channel_list([1, 2, 3], InvalidBody, max_channels=3) == [1, 2, 3]
    with pytest.raises(TooManyChannels):
        params.channel_list([1, 2, 3, 4], InvalidBody, max_channels=3)


# -- query strings -----------------------------------------------------------------------

KNOWN = {"channels", "timeout", "since"}


def test_query_keeps_known_parameters_decoded() -> None:
    found = params.query("channels=17,tag%3Ac%2B%2B&timeout=0.5&since=", KNOWN)
    assert found == {"channels": "17,tag:c++", "timeout": "0.5", "since": ""}


def test_query_ignores_unknown_parameters_even_repeated() -> None:
    assert params.query("_=1&_=2&channels=1&callback=x", KNOWN) == {"channels": "1"}
    assert params.query("", KNOWN) == {}


@pytest.mark.parametrize(
    "text", ["channels=1&channels=2", "timeout=1&channels=1&timeout=1", "since=&since="]
)
def test_query_rejects_a_repeated_parameter(text: str) -> None:
    with pytest.raises(InvalidParameter):
        params.query(text, KNOWN)


def test_query_rejects_invalid_utf8() -> None:
    with pytest.raises(InvalidParameter):
        params.query("channels=%ff", KNOWN)


# -- seconds and cursors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0.0),
        ("50", 50.0),
        ("0.5", 0.5),
        (".5", 0.5),
        ("5.", 5.0),
        ("1e3", 1000.0),
        ("1E-3", 0.001),
        ("1700000000.123456", 1700000000.123456),
        ("300", 300.0),
    ],
)
def test_seconds_accepts_plain_numbers(text: str, expected: float) -> None:
    assert params.seconds(text, "timeout") == expected


@pytest.mark.parametrize(
    "text",
    [
        "nan",
        "NaN",
        "inf",
        "-inf",
        "infinity",
        "1e400",
        "-1",
        "-0.5",
        "1_0",
        " 1",
        "1 ",
        "",
        "+1",
        "0x10",
        "1e",
        ".",
        "-",
        "1,5",
        "\u0663",
    ],
)
def test_seconds_rejects(text: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        params.seconds(text, "timeout")
    assert "timeout" in caught.value.detail


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", 0), ("1", 1), (str(MAX_ID), MAX_ID), ("0000000000000017", 17)],
)
def test_cursor_accepts_ids(text: str, expected: int) -> None:
    assert params.cursor(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        str(MAX_ID + 1),
        "99999999999999999",
        "00000000000000017",
        "-1",
        "+1",
        "1.0",
        "",
        " 1",
        "1e3",
        "abc",
        "\u0661",
        "0x1",
    ],
)
def test_cursor_rejects(text: str) -> None:
    with pytest.raises(InvalidCursor):
        params.cursor(text)


# -- bodies ------------------------------------------------------------------------------


def test_json_body() -> None:
    assert params.json_body(b'{"ttl": 5}') == {"ttl": 5}
    assert params.json_body(b"", optional=True) == {}
    assert params.json_body(b" \r\n", optional=True) == {}
    with pytest.raises(InvalidJson):
        params.json_body(b"")
    with pytest.raises(InvalidJson):
        params.json_body(b'{"ttl": ')
    with pytest.raises(InvalidJson):
        params.json_body(b"\xff", optional=True)
    for not_an_object in (b"[1]", b"1", b'"x"', b"null"):
        with pytest.raises(InvalidBody):
            params.json_body(not_an_object, optional=True)


def test_ttl() -> None:
    assert params.ttl({}) is None
    assert params.ttl({"ttl": 5}) == 5.0
    assert isinstance(params.ttl({"ttl": 5}), float)
    assert params.ttl({"ttl": 0.25}) == 0.25
    for bad in (0, -1, -0.5, True, "5", None, [5], float("inf"), float("nan")):
        with pytest.raises(InvalidBody):
            params.ttl({"ttl": bad})


def test_name() -> None:
    assert params.name({}) is None
    assert params.name({"name": None}) is None
    assert params.name({"name": "tag:c++"}) == "tag:c++"
    for bad in ("", "42", "a,b", "x" * 201, 42, ["a"]):
        with pytest.raises(InvalidBody):
            params.name({"name": bad})


def test_publication_gives_refs_and_encoded_data() -> None:
    refs, data = params.publication({"channels": [17, "tag:c++", "18"], "data": {"a": [1, 2]}})
    assert refs == [17, "tag:c++", 18]
    assert data == b'{"a":[1,2]}'
    assert params.publication({"channels": [1], "data": None}) == ([1], b"null")
    assert params.publication({"data": "x", "channels": [1]}) == ([1], b'"x"')


@pytest.mark.parametrize(
    "item",
    [
        [],
        "x",
        None,
        {"channels": [1]},
        {"data": 1},
        {"channels": [], "data": 1},
        {"channels": 1, "data": 1},
        {"channels": "1", "data": 1},
        {"channels": None, "data": 1},
        {"channels": [1, 1], "data": 1},
        {"channels": [1, "1"], "data": 1},
        {"channels": [0], "data": 1},
        {"channels": [True], "data": 1},
        {"channels": [1.0], "data": 1},
        {"channels": ["a,b"], "data": 1},
        {"channels": [1], "data": 1, "ttl": 5},
    ],
)
def test_publication_rejects(item: Any) -> None:
    with pytest.raises(InvalidBody):
        params.publication(item)


def test_publication_limits_its_channels_and_data() -> None:
    with pytest.raises(TooManyChannels):
        params.publication({"channels": list(range(1, 102)), "data": 1})
    with pytest.raises(TooManyChannels):
        params.publication({"channels": [1, 2], "data": 1}, max_channels=1)
    assert params.publication({"channels": [1], "data": "abc"}, max_bytes=5) == ([1], b'"abc"')
    with pytest.raises(MessageTooLarge):
        params.publication({"channels": [1], "data": "abcd"}, max_bytes=5)
    items = [{"channels": [1], "data": 1}, {"channels": [1], "data": "toolong"}]
    with pytest.raises(MessageTooLarge) as caught:
        params.batch({"messages": items}, max_bytes=5)
    assert "messages[1]" in caught.value.detail


def test_batch_gives_one_publication_per_item_in_order() -> None:
    items = [{"channels": [i], "data": i} for i in range(1, 4)]
    assert params.batch({"messages": items}) == [([1], b"1"), ([2], b"2"), ([3], b"3")]
    full = [{"channels": [1], "data": None}] * params.MAX_BATCH
    assert len(params.batch({"messages": full})) == params.MAX_BATCH


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"messages": []},
        {"messages": None},
        {"messages": {"channels": [1], "data": 1}},
        {"messages": [{"channels": [1], "data": 1}], "extra": 1},
        {"messages": [{"channels": [1], "data": None}] * 1001},
    ],
)
def test_batch_rejects(obj: dict[str, Any]) -> None:
    with pytest.raises(InvalidBody):
        params.batch(obj)


def test_batch_names_the_bad_item() -> None:
    with pytest.raises(InvalidBody) as caught:
        params.batch({"messages": [{"channels": [1], "data": 1}, {"channels": [1]}]})
    assert "messages[1]" in caught.value.detail


# -- json_body: what orjson would read differently from what was written ------------------


def _strict(text: str) -> object:
    """The verdict of a parser that keeps every key and integer: the value, or None
    when a key repeats or an integer does not fit in 64 bits."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({key for key, _ in items}) != len(items):
            raise ValueError("repeated key")
        return dict(items)

    def integer(digits: str) -> int:
        number = int(digits)
        if not -(2**63) <= number <= 2**64 - 1:
            raise ValueError("past 64 bits")
        return number

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_int=integer)
    except ValueError:
        return None


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "a": 2}',
        '{"data": {"x": [1, {"k": "v:w", "k": 0}]}}',
        '{"a": 1, "\\u0061": 2}',
        '{"data": 18446744073709551616}',
        '{"data": [-9223372036854775809]}',
        '{"data": {"n": 1180591620717411303424}}',
        '{"data": ' + "9" * 300 + "}",
    ],
)
def test_json_body_refuses_repeated_keys_and_integers_past_64_bits(text: str) -> None:
    with pytest.raises(InvalidBody):
        params.json_body(text.encode())


@pytest.mark.parametrize(
    "text",
    [
        '{"url": "http://h:1/a:b", "t": ":::"}',
        '{"a\\u003a": 1, "a:b": 2}',
        '{"data": [18446744073709551615, -9223372036854775808, 1.2345678901234567890123]}',
        '{"data": "1234567890123456789012345"}',
        '{"a": {"a": {"a": 1}}}',
    ],
)
def test_json_body_keeps_what_only_looks_suspicious(text: str) -> None:
    assert params.json_body(text.encode()) == json.loads(text)


_KEYS = st.sampled_from(["a", "b", "a:b", ":", "\\u0061", "\\u003a"])
_LEAVES = st.one_of(
    st.integers(min_value=-(2**66), max_value=2**66).map(str),
    st.sampled_from(['"x:y"', '"\\u003a"', "1.5", "null", '"' + "7" * 19 + '"']),
)


def _objects(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    members = st.lists(st.tuples(_KEYS, children), max_size=4)
    return st.one_of(
        members.map(lambda kv: "{" + ", ".join(f'"{k}": {v}' for k, v in kv) + "}"),
        st.lists(children, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
    )


@settings(max_examples=400, deadline=None)
@given(st.recursive(_LEAVES, _objects, max_leaves=12).map(lambda v: '{"data": ' + v + "}"))
def test_json_body_agrees_with_a_strict_parser(text: str) -> None:
    expected = _strict(text)
    if expected is None:
        with pytest.raises(InvalidBody):
            params.json_body(text.encode())
    else:
        assert params.json_body(text.encode()) == expected


def test_a_channel_id_of_any_length_is_out_of_range() -> None:
    for digits in (17, 100, 5000):
        with pytest.raises(InvalidParameter, match="out of range"):
            params.path_channel("9" * digits)

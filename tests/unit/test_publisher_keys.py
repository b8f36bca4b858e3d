"""`--publisher-keys FILE`: what a good file gives, and each mistake as one sentence
that names the problem and never the secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushup.config import Settings
from pushup.core.tenants import PublisherKey, PublisherKeys
from pushup.options import SettingError
from pushup.publisher_keys import load_keys

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "publisher-keys.example.toml"
SECRET_A = "a" * 32
SECRET_B = "b" * 40


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "keys.toml"
    path.write_text(text)
    return str(path)


def test_the_example_in_deploy_is_a_valid_file() -> None:
    keys = load_keys(str(EXAMPLE))
    assert keys.names == ("blog", "shop", "ops")
    by_name = {key.name: key for key in keys.keys}
    assert by_name["blog"].prefixes == ("blog:", "comments:")
    assert not by_name["blog"].admin and not by_name["blog"].unrestricted
    assert by_name["ops"].admin and by_name["ops"].unrestricted


def test_a_file_gives_its_keys_in_order_with_their_prefixes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'[keys.shop]\nsecret = "{SECRET_A}"\nprefixes = ["shop:", "shop:", "cart:"]\n'
        f'[keys.blog]\nsecret = "{SECRET_B}"\nprefixes = ["blog:"]\nadmin = true\n',
    )
    keys = load_keys(path)
    assert keys == PublisherKeys(
        (
            PublisherKey("shop", SECRET_A, ("shop:", "cart:")),
            PublisherKey("blog", SECRET_B, ("blog:",), admin=True),
        ),
        source=path,
    )
    assert SECRET_A not in repr(keys)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[keys.a\n", "is not valid TOML"),
        ("", "names no key"),
        ("[other]\n", "unknown table or field 'other'"),
        (f'[keys.a]\nsecret = "{SECRET_A}"\nprefixes = []\n', "the prefixes of key 'a' are empty"),
        (f'[keys.a]\nsecret = "{SECRET_A}"\n', "key 'a' needs prefixes"),
        (f'[keys.a]\nsecret = "{SECRET_A}"\nprefixes = "a:"\n', "key 'a' needs prefixes"),
        ('[keys.a]\nsecret = "short"\nprefixes = ["a:"]\n', "the secret of key 'a' is too short"),
        ('[keys.a]\nprefixes = ["a:"]\n', "key 'a' needs a secret"),
        (
            f'[keys.a]\nsecret = "{"x " * 20}"\nprefixes = ["a:"]\n',
            "the secret of key 'a' must be visible ASCII",
        ),
        (
            f'[keys.a]\nsecret = "{SECRET_A}"\nprefixes = ["a:"]\n'
            f'[keys.b]\nsecret = "{SECRET_A}"\nprefixes = ["b:"]\n',
            "keys 'a' and 'b' have the same secret",
        ),
        (
            f'[keys."a b"]\nsecret = "{SECRET_A}"\nprefixes = ["a:"]\n',
            "key name 'a b' must be 1 to 64 letters",
        ),
        (
            f'[keys.a]\nsecret = "{SECRET_A}"\nprefix = ["a:"]\n',
            "key 'a' has an unknown field 'prefix'",
        ),
        (
            f'[keys.a]\nsecret = "{SECRET_A}"\nprefixes = ["a:"]\nadmin = "yes"\n',
            "admin of key 'a' must be true or false",
        ),
    ],
)
def test_a_bad_file_is_one_sentence_naming_the_file_and_the_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as caught:
        load_keys(path)
    message = str(caught.value)
    assert message.startswith(path), message
    assert problem in message, message
    assert SECRET_A not in message


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read .*missing\.toml: No such file"):
        load_keys(str(tmp_path / "missing.toml"))


def test_the_single_key_is_one_key_allowed_everything() -> None:
    keys = Settings(publisher_key="s3cret").keys
    assert keys is not None
    (key,) = keys.keys
    assert key.unrestricted and key.admin
    assert keys.match(b"s3cret") is key
    assert keys.match(b"s3cre") is None
    assert Settings().keys is None


def test_both_options_at_once_are_refused(tmp_path: Path) -> None:
    keys = PublisherKeys((PublisherKey("a", SECRET_A, ("a:",)),))
    with pytest.raises(SettingError, match="and --publisher-key cannot be used together"):
        Settings(publisher_key="s3cret", publisher_keys=keys)

"""The `pushup` command: version, options from flags and environment, start and stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pushup import __version__
from pushup.config import Settings
from pushup.engine_urls import USAGE
from pushup.options import GROUPS, options
from tests.conftest import ServerFactory
from tests.helpers import wait_for


def _pushup(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pushup", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_version() -> None:
    result = _pushup("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_bad_option_value_is_a_usage_error() -> None:
    result = _pushup("serve", "--message-ttl", "0")
    assert result.returncode == 2
    assert "--message-ttl" in result.stderr


def test_bad_environment_value_is_a_usage_error() -> None:
    result = _pushup("serve", env={**os.environ, "PUSHUP_PORT": "not-a-port"})
    assert result.returncode == 2
    assert "port" in result.stderr
    assert "PUSHUP_PORT" in result.stderr


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a usage error is, with no usage text and no traceback."""
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# A flag, a bad value for it, the field behind it (never to be named), and the start
# of what is wrong with the value.
BAD_VALUES = [
    ("--subscriber-secret", "too-short", "subscriber_secret", "must be at least 32 bytes"),
    (
        "--engine",
        "nope://x",
        "engine_url",
        USAGE,
    ),
    (
        "--engine",
        "redis+sentinel://s1:26379,s2:99999/main",
        "engine_url",
        f"{USAGE}: the Sentinel 's2:99999' must be host:port",
    ),
    ("--workers", "0", "workers", "must be at least 1"),
    ("--shutdown-timeout", "-1", "shutdown_timeout_s", "must be a positive number"),
]


@pytest.mark.parametrize(("flag", "value", "field", "problem"), BAD_VALUES)
def test_a_bad_flag_value_is_one_line_naming_the_flag(
    flag: str, value: str, field: str, problem: str
) -> None:
    line = _one_line(_pushup("serve", flag, value))
    assert line.startswith(f"Error: {flag} {problem}"), line
    assert field not in line.replace(flag, "")


@pytest.mark.parametrize(("flag", "value", "field", "problem"), BAD_VALUES)
def test_a_bad_environment_value_is_one_line_naming_the_variable(
    flag: str, value: str, field: str, problem: str
) -> None:
    variable = "PUSHUP_" + flag.removeprefix("--").upper().replace("-", "_")
    line = _one_line(_pushup("serve", env={**os.environ, variable: value}))
    assert line.startswith(f"Error: {variable} {problem}"), line
    assert flag not in line
    assert field not in line.replace(variable, "")


@pytest.mark.parametrize("url", ["redis://:s3cret@localhost:x/0", "nats://u:s3cret@localhost"])
def test_a_bad_engine_url_is_one_line_without_its_password(url: str) -> None:
    line = _one_line(_pushup("serve", "--engine", url))
    assert line.startswith(f"Error: --engine {USAGE}"), line
    assert "s3cret" not in line


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "cannot read"),
        ("[keys.a\n", "is not valid TOML"),
        ('[keys.a]\nsecret = "short"\nprefixes = ["a:"]\n', "is too short"),
        (f'[keys.a]\nsecret = "{"s" * 32}"\nprefixes = []\n', "are empty"),
        (
            f'[keys.a]\nsecret = "{"s" * 32}"\nprefixes = ["a:"]\n'
            f'[keys.b]\nsecret = "{"s" * 32}"\nprefixes = ["b:"]\n',
            "have the same secret",
        ),
    ],
)
def test_a_bad_publisher_keys_file_is_one_line_naming_the_flag_or_variable(
    tmp_path: Path, text: str | None, problem: str
) -> None:
    path = tmp_path / "keys.toml"
    if text is not None:
        path.write_text(text)
    line = _one_line(_pushup("serve", "--publisher-keys", str(path)))
    assert line.startswith(f"Error: --publisher-keys {'cannot read ' if text is None else ''}")
    assert problem in line, line
    assert "s" * 32 not in line
    env = {**os.environ, "PUSHUP_PUBLISHER_KEYS": str(path)}
    line = _one_line(_pushup("serve", env=env))
    assert line.startswith("Error: PUSHUP_PUBLISHER_KEYS "), line
    assert problem in line, line


def test_publisher_keys_and_a_publisher_key_are_one_or_the_other() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "publisher-keys.example.toml"
    line = _one_line(_pushup("serve", "--publisher-keys", str(example), "--publisher-key", "k"))
    assert line.startswith("Error: --publisher-keys and --publisher-key cannot be used together")


def test_an_unknown_flag_is_one_line() -> None:
    assert "--prot" in _one_line(_pushup("serve", "--prot", "7070"))


def test_help_lists_every_option_under_a_group_with_its_variable() -> None:
    result = _pushup("serve", "--help")
    assert result.returncode == 0
    heading = None
    seen: dict[str, tuple[str, str]] = {}  # flag: (group, the rest of its line)
    for line in result.stdout.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            heading = line.removesuffix(":")
        elif line.startswith("  --"):
            flag, _, rest = line.strip().partition(" ")
            assert heading is not None, line
            seen[flag.replace("--[no-]", "--")] = (heading, rest)
    expected = {opt.flag: opt for opt in options(Settings)}
    assert set(seen) == set(expected)
    for flag, (group, rest) in seen.items():
        opt = expected[flag]
        assert group == GROUPS[opt.group]
        default = "" if opt.shown_default is None else f"={opt.shown_default}"
        assert rest.split()[-1] == opt.env + default, (flag, rest)
    assert len(result.stdout.splitlines()) < 100


def test_environment_sets_options(server_factory: ServerFactory) -> None:
    server = server_factory(env={"PUSHUP_MAX_TIMEOUT": "2"})
    client = server.client()
    channel = client.post("/channels").json()["id"]
    assert client.get("/subscribe", params={"channels": channel, "timeout": 2}).status_code == 200
    too_long = client.get("/subscribe", params={"channels": channel, "timeout": 2.5})
    assert too_long.status_code == 400
    assert too_long.json()["error"] == "invalid_parameter"


def test_flags_win_over_environment(server_factory: ServerFactory) -> None:
    server = server_factory("--max-timeout", "5", env={"PUSHUP_MAX_TIMEOUT": "1"})
    client = server.client()
    channel = client.post("/channels").json()["id"]
    assert client.get("/subscribe", params={"channels": channel, "timeout": 0}).status_code == 200
    assert client.get("/subscribe", params={"channels": channel, "timeout": 4}).status_code == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serves_on_host_and_port_and_stops_on_sigterm(tmp_path: Path) -> None:
    """On its defaults, including the data directory under the working directory."""
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if key != "PUSHUP_DATA_DIR"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pushup", "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=15, what="the server on its port")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    # The banner to start (a line, then one indented line per fact), one line to stop,
    # none per request.
    records = [line for line in output.strip().splitlines() if not line.startswith("  ")]
    assert len(records) == 2, output
    assert f"listening on http://127.0.0.1:{port}" in records[0]
    assert f"  data dir:    {tmp_path / 'pushup-data'}" in output
    assert "stopped" in records[1]
    assert (tmp_path / "pushup-data" / "journal.sqlite3").is_file()

"""The start-up banner: where the server listens, where to look and how it is set up,
one line per fact in text logs, one JSON object in JSON logs; logged once, by the
supervisor alone when there are workers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pushup import build
from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, wait_for

KEY = "a-publisher-key-never-logged"
# An upstream nobody calls here: the banner only names it.
UNUSED = "http://127.0.0.1:9"
FACTS = (
    "url",
    "home",
    "dashboard",
    "docs",
    "health",
    "metrics",
    "engine",
    "data_dir",
    "publishers",
    "subscribers",
    "cors",
    "upstream",
    "workers",
    "build",
    "limits",
    "cache",
)


def _facts(server: ServerProcess) -> dict[str, str]:
    """The banner's facts from a text log: the indented `name: value` lines after the
    line that says where it listens."""
    lines = server.log().splitlines()
    start = next(i for i, line in enumerate(lines) if "listening on" in line)
    facts = {}
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        name, _, value = line.strip().partition(": ")
        facts[name] = value.strip()
    return facts


def test_the_text_banner_has_one_line_per_fact(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = server_factory("--data-dir", str(data_dir))
    url = server.url
    facts = _facts(server)
    assert list(facts) == [name.replace("_", " ") for name in FACTS]
    assert facts["url"] == url
    assert facts["home"] == f"{url}/"
    assert facts["dashboard"] == f"{url}/dashboard"
    assert facts["docs"] == f"{url}/openapi.yaml"
    assert facts["health"] == f"{url}/health"
    assert facts["metrics"] == f"{url}/metrics"
    assert facts["engine"] == "memory (in this process)"
    assert facts["data dir"] == str(data_dir)
    assert facts["publishers"] == "loopback only (no --publisher-key)"
    assert facts["workers"] == "1"
    assert facts["build"] == build.kind()
    assert "18000 connections per worker" in facts["limits"]
    assert "1000 per channel" in facts["cache"]


def test_the_banner_says_when_nothing_is_kept(server_factory: ServerFactory) -> None:
    facts = _facts(server_factory("--data-dir", "none", "--publisher-key", KEY))
    assert facts["data dir"] == "none: nothing kept across restarts"
    assert facts["publishers"] == "with the bearer key (--publisher-key)"


def _json_lines(server: ServerProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def _banners(server: ServerProcess) -> list[dict[str, Any]]:
    return [line for line in _json_lines(server) if "dashboard" in line]


def test_the_json_banner_is_one_object_with_every_fact(server_factory: ServerFactory) -> None:
    server = server_factory("--log-format", "json", "--publisher-key", KEY)
    (banner,) = _banners(server)
    assert set(FACTS) <= set(banner)
    assert banner["level"] == "info"
    assert banner["message"].endswith(f"listening on {server.url}")
    assert banner["docs"] == f"{server.url}/openapi.yaml"
    assert banner["workers"] == 1
    assert KEY not in server.log()


def test_workers_have_one_banner_from_their_supervisor(
    server_factory: ServerFactory, redis_url: str
) -> None:
    with_password = redis_url.replace("redis://", "redis://:hunter2@", 1)
    server = server_factory(
        "--workers", "2", "--engine", with_password, "--log-format", "json", "--upstream", UNUSED
    )
    banner = wait_for(lambda: _banners(server), what="the supervisor's banner")
    (only,) = banner
    assert only["logger"] == "pushup.supervisor"
    assert only["pid"] == server.proc.pid
    assert only["workers"] == 2
    assert only["engine"] == redis_url
    assert only["data_dir"] == "kept by Redis"
    assert only["home"] == f"{server.url}/ (the upstream's page)"
    assert "hunter2" not in server.log()

"""`GET /metrics` in the Prometheus text format, per worker and summed; JSON logs that
name the request; request ids echoed on errors."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pushup.observe.metrics import Figures
from pushup.observe.peers import Peers
from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, wait_for

KEY = "metrics-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: ServerProcess, headers: dict[str, str] | None = None) -> Samples:
    response = httpx.get(f"{server.url}/metrics", headers=headers, timeout=10.0)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        assert family.name.startswith("pushup_"), family.name
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def workers(samples: Samples) -> set[str]:
    return {
        dict(labels)["worker"] for name, labels in samples if name == "pushup_publications_total"
    }


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=8)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


def test_figures_of_one_process(server_factory: ServerFactory, pool: ThreadPoolExecutor) -> None:
    server = server_factory("--data-dir", "none")
    client = server.client()
    assert client.post("/channels", json={"name": "news"}).status_code == 201
    assert client.get("/nothing-here").status_code == 404
    assert client.get("/subscribe", params={"channels": "gone"}).status_code == 404
    # Three polls park, one publication wakes them: one fan-out of three deliveries.
    polls = [
        pool.submit(httpx.get, f"{server.url}/subscribe", params={"channels": "news"}, timeout=20.0)
        for _ in range(3)
    ]
    wait_for(
        lambda: value(scrape(server), "pushup_parked_subscribers", worker="0") == 3,
        what="three parked polls",
    )
    data = {"text": "hello"}
    assert client.post("/publish", json={"channels": ["news"], "data": data}).status_code == 201
    for poll in polls:
        assert poll.result(timeout=20).json()["messages"][0]["data"] == data

    samples = scrape(server)
    for worker in ("0", "all"):
        assert value(samples, "pushup_publications_total", worker=worker) == 1
        assert value(samples, "pushup_deliveries_total", worker=worker) == 3
        assert value(samples, "pushup_channels", worker=worker) == 1
        assert value(samples, "pushup_cached_messages", worker=worker) == 1
        assert value(samples, "pushup_cached_bytes", worker=worker) == len(
            json.dumps(data, separators=(",", ":"))
        )
        assert value(samples, "pushup_parked_subscribers", worker=worker) == 0
        assert value(samples, "pushup_fanout_seconds_count", worker=worker) == 1
        # One observation per receiver of the fan-out, each well under the poll's wait.
        assert value(samples, "pushup_delivery_seconds_count", worker=worker) == 3
        assert 0 <= value(samples, "pushup_delivery_seconds_sum", worker=worker) < 30  # type: ignore[operator]
        assert value(samples, "pushup_errors_total", worker=worker, code="not_found") == 1
        assert value(samples, "pushup_errors_total", worker=worker, code="channel_not_found") == 1
        assert value(samples, "pushup_engine_reconnects_total", worker=worker) == 0
    assert value(samples, "pushup_open_connections", worker="0") >= 1  # type: ignore[operator]
    assert value(samples, "pushup_open_streams", worker="0") == 0
    published = value(
        samples, "pushup_request_seconds_count", worker="0", route="/publish", method="POST"
    )
    assert published == 1
    parked = value(
        samples, "pushup_request_seconds_bucket", worker="0", route="/subscribe", method="GET",
        le="+Inf",
    )  # fmt: skip
    assert parked == 4  # three parked, one answered 404


def test_messages_the_cache_drops_are_counted_by_reason(server_factory: ServerFactory) -> None:
    server = server_factory(
        "--data-dir", "none", "--max-messages", "3", "--message-ttl", "1",
        "--max-cache-bytes", "2000",
    )  # fmt: skip
    client = server.client()
    for name in ("counted", "weighed"):
        assert client.post("/channels", json={"name": name}).status_code == 201
    for n in range(5):  # two over the count of 3
        small = {"channels": ["counted"], "data": n}
        assert client.post("/publish", json=small).status_code == 201
    assert dropped(scrape(server), "count") == 2
    big = {"channels": ["weighed"], "data": "x" * 900}
    for _ in range(3):  # two fit in 2000 bytes with the 3 small ones; the third does not
        assert client.post("/publish", json=big).status_code == 201
    # The oldest go first, wherever they are: the 3 small ones, then the first big one.
    assert dropped(scrape(server), "bytes") == 4
    # After the message TTL the two left go too.
    wait_for(lambda: dropped(scrape(server), "ttl") == 2, what="the aged messages to be counted")


def dropped(samples: Samples, reason: str) -> float | None:
    return value(samples, "pushup_cache_dropped_messages_total", worker="0", reason=reason)


def test_metrics_are_for_publishers(server_factory: ServerFactory) -> None:
    server = server_factory("--publisher-key", KEY, "--data-dir", "none")
    refused = httpx.get(f"{server.url}/metrics")
    assert refused.status_code == 401
    assert refused.json()["error"] == "unauthorized"
    samples = scrape(server, AUTH)
    assert value(samples, "pushup_errors_total", worker="all", code="unauthorized") == 1


def test_one_scrape_shows_every_worker_and_their_sum(
    server_factory: ServerFactory, redis_url: str, pool: ThreadPoolExecutor
) -> None:
    server = server_factory("--workers", "2", "--engine", redis_url)
    client = server.client()
    assert client.post("/channels", json={"name": "news"}).status_code == 201

    def publish(n: int) -> int:
        # A connection of its own each: the kernel gives each to either worker.
        response = httpx.post(
            f"{server.url}/publish", json={"channels": ["news"], "data": n}, timeout=10.0
        )
        return response.status_code

    assert set(pool.map(publish, range(40))) == {201}

    def summed() -> Samples | None:
        samples = scrape(server)
        total = value(samples, "pushup_publications_total", worker="all")
        return samples if total == 40 else None

    samples = wait_for(summed, timeout=15.0, what="every worker's publications in one scrape")
    assert workers(samples) == {"0", "1", "all"}
    per_worker = [value(samples, "pushup_publications_total", worker=w) for w in ("0", "1")]
    assert sum(per_worker) == 40  # type: ignore[arg-type]
    for name in ("pushup_open_connections", "pushup_parked_subscribers"):
        parts = [value(samples, name, worker=w) for w in ("0", "1")]
        assert value(samples, name, worker="all") == sum(parts)  # type: ignore[arg-type]
    # The cache is Redis's: its size is not this node's figure.
    assert value(samples, "pushup_channels", worker="all") is None


def test_a_restarted_worker_counts_on(tmp_path: Path) -> None:
    """What a worker shared last is where its successor in the slot starts."""
    before = Figures()
    before.publications = 7
    before.errors["not_found"] = 2
    before.request_done("/publish", "POST", 0.001)
    Peers(tmp_path, "1").write({"worker": "1", "time": 0.0, **before.dump()})
    after = Figures()
    previous = Peers(tmp_path, "1").previous()
    assert previous is not None
    after.absorb(previous)
    after.publications += 1
    assert after.publications == 8
    assert after.errors == {"not_found": 2}
    assert sum(after.requests["/publish", "POST"].counts) == 1
    # A sibling sees it, marked stale (too old for its gauges to count).
    (seen,) = Peers(tmp_path, "0").others()
    assert seen["worker"] == "1" and seen["stale"]


# -- logs ---------------------------------------------------------------------------------


def json_lines(server: ServerProcess) -> list[dict[str, Any]]:
    lines = [line for line in server.log().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_json_logs_name_the_request(server_factory: ServerFactory) -> None:
    server = server_factory(
        "--log-format", "json", "--log-level", "debug", "--publisher-key", KEY,
        "--data-dir", "none",
    )  # fmt: skip
    # A wrong key: a warning, under the client's own request id, echoed back.
    refused = httpx.post(
        f"{server.url}/publish",
        json={"channels": ["x"], "data": 1},
        headers={"Authorization": "Bearer wrong", "X-Request-Id": "client-id-42"},
    )
    assert refused.status_code == 401
    assert refused.headers["x-request-id"] == "client-id-42"
    # No id (or an unusable one): the server makes one, and logs the error under it.
    missing = httpx.get(f"{server.url}/channels/nope", headers={**AUTH, "X-Request-Id": "a b"})
    assert missing.status_code == 404
    made = missing.headers["x-request-id"]
    assert made and made != "a b"

    def logged() -> list[dict[str, Any]] | None:
        lines = json_lines(server)
        ids = {line.get("request_id") for line in lines}
        return lines if {"client-id-42", made} <= ids else None

    lines = wait_for(logged, what="both errors in the log")
    warning = next(line for line in lines if line.get("request_id") == "client-id-42")
    assert warning["level"] == "warning"
    assert warning["logger"] == "pushup.http"
    assert warning["status"] == 401 and warning["code"] == "unauthorized"
    assert warning["pid"] == server.proc.pid
    assert "POST /publish" in warning["message"]
    debug = next(line for line in lines if line.get("request_id") == made)
    assert debug["level"] == "debug" and debug["code"] == "channel_not_found"
    for line in lines:
        assert {"time", "level", "logger", "message", "pid"} <= set(line)
    assert any("listening on" in line["message"] for line in lines)


def test_json_logs_of_workers_name_the_worker(
    server_factory: ServerFactory, redis_url: str
) -> None:
    server = server_factory(
        "--workers", "2", "--engine", redis_url, "--log-format", "json", "--publisher-key", KEY
    )
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    lines = wait_for(
        lambda: [line for line in json_lines(server) if line.get("code") == "unauthorized"],
        what="the refusal in the log",
    )
    assert lines[0]["worker"] in {"0", "1"}
    assert lines[0]["pid"] != server.proc.pid  # a worker, not the supervisor
    assert lines[0]["request_id"]
    # SIGTERM: the supervisor logs its stop, as JSON too.
    os.kill(server.proc.pid, signal.SIGTERM)
    server.proc.wait(timeout=15)
    assert any("every worker has stopped" in line["message"] for line in json_lines(server))

"""The dashboard's figures in real Chromium: delivery latency and errors over time, the
busiest channels, and one row per node of a shared engine.

With `PUSHUP_SCREENSHOT_DIR` set, the first test saves the page as `dashboard.png`
there (docs/dashboard.png is made so)."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import ContextFactory
from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, wait_for

KEY = "dashboard-figures-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def figure(page: Page, name: str, worker: str = "all") -> str:
    text: str = page.locator(f'td[data-worker="{worker}"][data-figure="{name}"]').inner_text()
    return text


def chart(page: Page, name: str) -> str:
    drawn: str = page.evaluate(f"document.getElementById({name!r}).toDataURL()")
    return drawn


def park_polls(server: ServerProcess, channel: str, count: int) -> list[threading.Thread]:
    """Long polls parked on `channel` from threads, each answered by a publication."""

    def poll() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            client.get("/subscribe", params={"channels": channel, "timeout": "20"})

    threads = [threading.Thread(target=poll, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_latency_errors_and_busiest_channels(
    server_factory: ServerFactory, new_context: ContextFactory
) -> None:
    server = server_factory("--publisher-key", KEY)
    publisher = httpx.Client(base_url=server.url, headers=AUTH)
    for name in ("hot", "busy"):
        assert publisher.post("/channels", json={"name": name}).status_code == 201
    page = new_context().new_page()
    page.goto(f"{server.url}/dashboard?key={KEY}")
    expect(page.locator('td[data-worker="all"][data-figure="errors"]')).to_have_text("0")
    latency_before = chart(page, "latency-chart")

    # Three polls parked on "hot": the busiest channel by subscribers.
    threads = park_polls(server, "hot", 3)
    wait_for(lambda: publisher.get("/channels/hot").json()["subscribers"] == 3, what="3 polls")
    expect(page.locator("#top-subscribed tbody tr").first).to_contain_text("hot")
    expect(page.locator("#top-subscribed tbody tr").first.locator("td").last).to_have_text("3")

    # Published to: delivered to the three, so the latency has figures.
    assert publisher.post("/publish", json={"channels": ["hot"], "data": 1}).is_success
    for thread in threads:
        thread.join(timeout=10)
    expect(page.locator("#latency-p50")).to_have_text(re.compile(r"^\d+(\.\d+)? ms$"))
    assert chart(page, "latency-chart") != latency_before

    # Expected outcomes are told apart, not counted as errors: a name taken, a poll of
    # a channel that does not exist (it expired). A publication to it is an error.
    errors_before = chart(page, "errors-chart")
    assert publisher.post("/channels", json={"name": "hot"}).status_code == 409
    with httpx.Client(base_url=server.url) as subscriber:
        assert subscriber.get("/subscribe", params={"channels": "gone"}).status_code == 404
    assert publisher.post("/publish", json={"channels": ["gone"], "data": 1}).status_code == 404
    expect(page.locator("#errors")).to_contain_text("channel_not_found: 1")
    expect(page.locator("#errors")).to_contain_text("name_taken (expected): 1")
    expect(page.locator("#errors")).to_contain_text("channel_not_found (expected): 1")
    assert figure(page, "errors") == "1", page.locator("#errors").inner_text()
    wait_for(lambda: chart(page, "errors-chart") != errors_before, what="the errors chart")

    # The busiest by publications: the channel published to all along.
    def busy_on_top() -> bool:
        for n in range(10):
            publisher.post("/publish", json={"channels": ["busy"], "data": n})
        return "busy" in page.locator("#top-publishing tbody tr").first.inner_text(timeout=1000)

    wait_for(busy_on_top, timeout=15, interval=0.2, what="busy on top of the publications")

    # Its page from the list of the busiest.
    page.locator("#top-publishing a").first.click()
    expect(page.locator('dd[data-field="name"]')).to_have_text("busy")
    expect(page.locator("#messages tbody tr").first).to_contain_text("9")
    screenshots = os.environ.get("PUSHUP_SCREENSHOT_DIR")
    if screenshots:
        page.set_viewport_size({"width": 1500, "height": 900})
        page.screenshot(path=str(Path(screenshots) / "dashboard.png"), full_page=True)
    publisher.close()


def test_every_node_of_a_shared_engine_has_its_row(
    server_factory: ServerFactory, new_context: ContextFactory, redis_url: str
) -> None:
    nodes = [server_factory("--engine", redis_url, "--publisher-key", KEY) for _ in range(2)]
    page = new_context().new_page()
    page.goto(f"{nodes[0].url}/dashboard?key={KEY}")

    # The other node finds the stats channel within a few seconds and publishes there.
    rows = page.locator("#nodes tbody tr")
    expect(rows).to_have_count(3, timeout=20_000)  # two nodes and all
    for node in nodes:
        port = node.url.rsplit(":", 1)[1]
        expect(page.locator(f'#nodes td[data-node$=":{port}"]').first).to_be_visible()

    # Each node's own figures: published through the second node, counted there.
    with httpx.Client(base_url=nodes[1].url, headers=AUTH) as publisher:
        assert publisher.post("/channels", json={"name": "news"}).status_code == 201
        for n in range(2):
            assert publisher.post("/publish", json={"channels": ["news"], "data": n}).is_success
    second = nodes[1].url.rsplit(":", 1)[1]
    first = nodes[0].url.rsplit(":", 1)[1]
    expect(
        page.locator(f'#nodes td[data-node$=":{second}"][data-figure="publications"]')
    ).to_have_text("2")
    expect(
        page.locator(f'#nodes td[data-node$=":{first}"][data-figure="publications"]')
    ).to_have_text("0")
    expect(page.locator('#nodes td[data-node="all"][data-figure="publications"]')).to_have_text("2")
    assert page.locator("#status").inner_text().startswith("2 nodes")

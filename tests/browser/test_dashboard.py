"""`/dashboard` in real Chromium: the key once in the URL becomes an HttpOnly cookie,
the page shows the figures, and they change as messages are published, pushed to it
through PushUp's own stats channel."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import ContextFactory
from tests.conftest import ServerFactory
from tests.helpers import ServerProcess

KEY = "dashboard-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def figure(page: Page, name: str, worker: str = "all") -> str:
    text: str = page.locator(f'td[data-worker="{worker}"][data-figure="{name}"]').inner_text()
    return text


def publish(server: ServerProcess, count: int) -> None:
    for n in range(count):
        response = httpx.post(
            f"{server.url}/publish", json={"channels": ["news"], "data": n}, headers=AUTH
        )
        assert response.status_code == 201, response.text


def test_the_dashboard_shows_live_figures(
    server_factory: ServerFactory, new_context: ContextFactory
) -> None:
    server = server_factory("--publisher-key", KEY, "--data-dir", "none")
    assert httpx.post(f"{server.url}/channels", json={"name": "news"}, headers=AUTH).is_success
    context = new_context()
    page = context.new_page()

    # Without the key: refused.
    refused = page.goto(f"{server.url}/dashboard")
    assert refused is not None and refused.status == 401

    # With it once: traded for a cookie the page's scripts cannot read, and gone from
    # the address bar.
    page.goto(f"{server.url}/dashboard?key={KEY}")
    assert page.url == f"{server.url}/dashboard"
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert KEY not in cookie["value"]
    expect(page.locator('td[data-worker="all"][data-figure="publications"]')).to_have_text("0")
    assert figure(page, "channels") == "1"  # the dashboard's own is left out

    # Published: the page hears it within a second or two, over its own subscription.
    publish(server, 3)
    expect(page.locator('td[data-worker="all"][data-figure="publications"]')).to_have_text("3")
    assert figure(page, "publications", worker="0") == "3"
    assert figure(page, "cached_messages") == "3"
    assert page.locator("#status").inner_text().startswith("1 node, 1 worker")

    # The cookie alone lets the page back in (a reload), and the figures go on.
    page.reload()
    expect(page.locator('td[data-worker="all"][data-figure="publications"]')).to_have_text("3")
    publish(server, 2)
    expect(page.locator('td[data-worker="all"][data-figure="publications"]')).to_have_text("5")
    # The dashboard's own subscription is a parked poll, fed by one delivery a second.
    deliveries = int(figure(page, "deliveries"))
    expect(page.locator('td[data-worker="all"][data-figure="deliveries"]')).not_to_have_text(
        str(deliveries)
    )
    assert int(figure(page, "parked")) >= 1
    assert float(page.locator("#rate-publications").inner_text()) >= 0


def test_a_loopback_browser_needs_no_key(
    server_factory: ServerFactory, new_context: ContextFactory
) -> None:
    server = server_factory("--data-dir", "none")
    page = new_context().new_page()
    response = page.goto(f"{server.url}/dashboard")
    assert response is not None and response.status == 200
    expect(page.locator('td[data-worker="0"][data-figure="pid"]')).to_have_text(
        str(server.proc.pid)
    )
    assert httpx.post(f"{server.url}/channels", json={"name": "news"}).is_success
    expect(page.locator('td[data-worker="all"][data-figure="channels"]')).to_have_text("1")

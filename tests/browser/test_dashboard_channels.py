"""The dashboard's channels in real Chromium: the list searched by name prefix and paged,
one channel's page (its state, presence, last messages), a test message published
from its form and seen arriving; the dashboard's cookie opens these calls and no
other publisher endpoint."""

from __future__ import annotations

import re
import threading

import httpx
from playwright.sync_api import expect

from tests.browser.conftest import ContextFactory
from tests.conftest import ServerFactory
from tests.helpers import wait_for

KEY = "dashboard-channels-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def test_search_page_and_open_a_channel(
    server_factory: ServerFactory, new_context: ContextFactory
) -> None:
    server = server_factory("--publisher-key", KEY)
    with httpx.Client(base_url=server.url, headers=AUTH) as publisher:
        ids = {}
        for name in [f"room:{n:02}" for n in range(25)] + ["news"]:
            created = publisher.post("/channels", json={"name": name})
            assert created.status_code == 201, created.text
            ids[name] = created.json()["id"]
        for n in range(3):
            assert publisher.post(
                "/publish", json={"channels": ["room:07"], "data": {"n": n}}
            ).is_success
    context = new_context()
    page = context.new_page()
    page.goto(f"{server.url}/dashboard?key={KEY}")

    # The cookie opens the dashboard's calls, and not the publisher endpoints.
    assert context.request.get(f"{server.url}/dashboard/channels").status == 200
    assert context.request.get(f"{server.url}/channels").status == 401
    assert context.request.post(f"{server.url}/publish", data={}).status == 401

    # Searched by prefix: a first page of 20 names, in order, then the rest.
    rows = page.locator("#channels tbody tr")
    page.fill("#prefix", "room:")
    page.click("#search button")
    expect(rows).to_have_count(20)
    expect(rows.first.locator("td").first).to_have_text("room:00")
    page.click("#more")
    expect(rows).to_have_count(25)
    expect(rows.last.locator("td").first).to_have_text("room:24")
    expect(page.locator("#more")).to_be_hidden()
    page.fill("#prefix", "news")
    page.click("#search button")
    expect(rows).to_have_count(1)

    # One channel's page: its state, its presence, its last messages. A subscriber
    # parked on the channel first, so that presence has someone to show.
    with httpx.Client(base_url=server.url, headers=AUTH) as publisher:
        since = publisher.get("/subscribe", params={"channels": "room:07", "last": "1"})
        cursor = since.json()["cursor"]

        def park() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as parked:
                query = {"channels": "room:07", "since": cursor, "timeout": 30}
                parked.get("/subscribe", params=query)

        threading.Thread(target=park, daemon=True).start()
        wait_for(
            lambda: publisher.get(f"/channels/{ids['room:07']}").json()["subscribers"] >= 1,
            timeout=10,
            what="a poll parked on room:07",
        )
    page.fill("#prefix", "room:07")
    page.click("#search button")
    page.click(f'#channels a[data-channel="{ids["room:07"]}"]')
    expect(page.locator("#channel-page")).to_be_visible()
    expect(page.locator('dd[data-field="name"]')).to_have_text("room:07")
    expect(page.locator('dd[data-field="id"]')).to_have_text(str(ids["room:07"]))
    expect(page.locator('dd[data-field="messages"]')).to_have_text("3")
    expect(page.locator("#presence")).to_have_text(re.compile(r"presence: [1-9]\d* connections"))
    messages = page.locator("#messages tbody tr")
    expect(messages).to_have_count(3)
    expect(messages.first).to_contain_text('{"n":2}')

    # A test message from the form: published, and pushed to the page's subscription.
    page.fill("#publish-data", '{"hello": "from the dashboard"}')
    page.click("#publish button")
    expect(page.locator("#publish-result")).to_contain_text("published")
    expect(messages).to_have_count(4)
    expect(messages.first).to_contain_text("from the dashboard")
    with httpx.Client(base_url=server.url) as subscriber:
        polled = subscriber.get("/subscribe", params={"channels": "room:07", "last": "1"})
        assert polled.json()["messages"][0]["data"] == {"hello": "from the dashboard"}

    # Not JSON: said on the page, nothing published.
    page.fill("#publish-data", "{oops")
    page.click("#publish button")
    expect(page.locator("#publish-result")).to_contain_text("not JSON")
    expect(page.locator('dd[data-field="messages"]')).to_have_text("4")

    # A link to a channel's page opens it.
    page.goto(f"{server.url}/dashboard#channel={ids['news']}")
    expect(page.locator('dd[data-field="name"]')).to_have_text("news")

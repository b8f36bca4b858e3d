"""`presence()` of `/pushup.js` in real Chromium: a page reads who is on its channel,
with the token it subscribes with, and an error answer rejects with its code."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from pushup.client import mint_token
from tests.browser.conftest import ContextFactory
from tests.browser.test_client import open_page, subscribe
from tests.conftest import ServerFactory
from tests.helpers import wait_for

SECRET = "a-subscriber-secret-of-at-least-32-bytes"
# With a key set, a loopback page is no publisher: it reads presence as a subscriber.
PUBLISHER = {"Authorization": "Bearer browser-presence-key"}

# Reads a channel's presence from the page; an error comes back as its fields.
PRESENCE = """async ([channel, token]) => {
  const { presence } = await import("/pushup.js");
  try {
    return await presence(channel, { token });
  } catch (error) {
    return { status: error.status, code: error.code };
  }
}"""


@pytest.mark.parametrize("transport", ["longpoll", "sse", "ws"])
def test_a_page_reads_who_is_on_its_channel(
    server_factory: ServerFactory, new_context: ContextFactory, transport: str
) -> None:
    server = server_factory(
        "--data-dir",
        "none",
        "--subscriber-secret",
        SECRET,
        "--publisher-key",
        PUBLISHER["Authorization"][7:],
    )
    for name in ("room", "other"):
        made = httpx.post(f"{server.url}/channels", json={"name": name}, headers=PUBLISHER)
        assert made.status_code == 201, made.text
    token = mint_token(SECRET, ["room"], subject="ann")
    page = open_page(new_context(), server)
    subscribe(page, ["room"], token=token, transport=transport)

    def read(channel: str, with_token: str) -> dict[str, Any]:
        found: dict[str, Any] = page.evaluate(PRESENCE, [channel, with_token])
        return found

    found = wait_for(lambda: (f := read("room", token)).get("connections") == 1 and f)
    assert (found["subs"], found["sub_count"], found["anonymous"]) == (["ann"], 1, 0)
    polls = 0 if transport != "longpoll" else 1
    assert (found["polls"], found["streams"]) == (polls, 1 - polls)
    # A token that does not grant the channel: refused, as a poll would be.
    assert read("other", token) == {"status": 403, "code": "forbidden"}

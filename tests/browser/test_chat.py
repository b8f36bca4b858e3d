"""The chat demo (examples/chat) end to end: its application behind `pushup serve
--upstream`, pages in Chromium talking through PushUp with `/pushup.js`."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page

from tests.browser.conftest import ContextFactory
from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, wait_for

REPOSITORY = Path(__file__).resolve().parents[2]
TRANSPORTS = ["longpoll", "sse", "ws"]

# Each line of the transcript as "who: text".
LINES = """() => [...document.querySelectorAll("#log li")].map(
  (li) => `${li.querySelector("b").textContent}: ${li.querySelector("span").textContent}`)"""


@dataclass
class Chat:
    pushup: ServerProcess

    @property
    def url(self) -> str:
        return self.pushup.url

    def open(self, context: BrowserContext, name: str, room: str, transport: str) -> Page:
        page = context.new_page()
        query = urlencode({"name": name, "room": room, "transport": transport})
        page.goto(f"{self.url}/?{query}")
        return page

    def post(self, name: str, room: str, text: str) -> None:
        body = {"name": name, "room": room, "text": text}
        response = httpx.post(f"{self.url}/api/messages", json=body)
        assert response.status_code == 201, response.text

    def parked(self, channel: str) -> int:
        response = httpx.get(f"{self.url}/channels/{quote(channel, safe='')}")
        count: int = response.json()["subscribers"]
        return count


@pytest.fixture
def chat(server_factory: ServerFactory) -> Iterator[Chat]:
    """The application on a socket bound here, PushUp in front of it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        app_port = sock.getsockname()[1]
        pushup = server_factory("--upstream", f"http://127.0.0.1:{app_port}")
        app = subprocess.Popen(
            [
                sys.executable,
                *("-m", "examples.chat.app", "--fd", str(sock.fileno()), "--pushup", pushup.url),
            ],
            pass_fds=[sock.fileno()],
            cwd=REPOSITORY,
        )
    try:

        def serving() -> bool:
            assert app.poll() is None, f"the chat application exited with {app.returncode}"
            return httpx.get(f"{pushup.url}/", timeout=5.0).status_code == 200

        wait_for(serving, timeout=15.0, what="the chat page through PushUp")
        yield Chat(pushup)
    finally:
        app.terminate()
        try:
            app.wait(timeout=10)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()


def lines(page: Page) -> list[str]:
    result: list[str] = page.evaluate(LINES)
    return result


def status(page: Page) -> tuple[str, str]:
    element = page.locator("#status")
    return element.get_attribute("data-role") or "", element.get_attribute("data-transport") or ""


def say(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_two_people_see_the_same_conversation_in_order(
    chat: Chat, new_context: ContextFactory, transport: str
) -> None:
    alice = chat.open(new_context(), "alice", "lobby", transport)
    wait_for(lambda: lines(alice) == ["alice: joined the room"], what="alice's join")
    bob = chat.open(new_context(), "bob", "lobby", transport)
    both = ["alice: joined the room", "bob: joined the room"]
    wait_for(lambda: lines(alice) == both, what=f"bob's join at alice's: {lines(alice)}")
    say(alice, "hi bob")
    wait_for(lambda: lines(bob)[-1:] == ["alice: hi bob"], what="alice's post at bob's")
    say(bob, "hi alice")
    say(bob, "how are you?")
    expected = [*both, "alice: hi bob", "bob: hi alice", "bob: how are you?"]
    for page in (alice, bob):
        wait_for(lambda page=page: lines(page) == expected, what=f"{expected}: {lines(page)}")
        assert status(page) == ("leader", transport)


def test_a_reloaded_page_catches_up_without_repeats(
    chat: Chat, new_context: ContextFactory
) -> None:
    alice = chat.open(new_context(), "alice", "lobby", "longpoll")
    wait_for(lambda: lines(alice) == ["alice: joined the room"], what="alice's join")
    chat.post("bob", "lobby", "one")
    before = ["alice: joined the room", "bob: joined the room", "bob: one"]
    wait_for(lambda: lines(alice) == before, what=f"{before}: {lines(alice)}")

    # Away from the page (its poll gone) while two more are posted, then back: a new
    # page in the same tab, which keeps its sessionStorage.
    url = alice.url
    alice.goto("about:blank")
    wait_for(lambda: chat.parked("room:lobby") == 0, what="alice's poll to end")
    chat.post("bob", "lobby", "two")
    chat.post("bob", "lobby", "three")
    alice.goto(url)
    expected = [*before, "bob: two", "bob: three"]
    wait_for(lambda: lines(alice) == expected, what=f"{expected}: {lines(alice)}")

    # A reload with a post racing it.
    alice.reload(wait_until="commit")
    chat.post("bob", "lobby", "four")
    expected.append("bob: four")
    wait_for(lambda: lines(alice) == expected, what=f"{expected}: {lines(alice)}")
    chat.post("bob", "lobby", "five")
    expected.append("bob: five")
    wait_for(lambda: lines(alice) == expected, what=f"{expected}: {lines(alice)}")


def test_tabs_of_one_browser_share_one_poll(chat: Chat, new_context: ContextFactory) -> None:
    context = new_context()
    tabs = [chat.open(context, "alice", "lobby", "longpoll") for _ in range(3)]
    wait_for(
        lambda: sorted(status(tab)[0] for tab in tabs) == ["follower", "follower", "leader"],
        what="one leading tab",
    )
    for channel in ("room:lobby", "user:alice"):
        wait_for(lambda channel=channel: chat.parked(channel) == 1, what=f"one poll on {channel}")
    chat.post("bob", "lobby", "hello tabs")
    expected = ["alice: joined the room", "bob: joined the room", "bob: hello tabs"]
    for tab in tabs:
        wait_for(lambda tab=tab: lines(tab) == expected, what=f"{expected}: {lines(tab)}")

    leader = next(tab for tab in tabs if status(tab)[0] == "leader")
    leader.close()
    rest = [tab for tab in tabs if tab is not leader]
    chat.post("bob", "lobby", "still there?")
    say(rest[0], "yes")
    expected += ["bob: still there?", "alice: yes"]
    for tab in rest:
        wait_for(lambda tab=tab: lines(tab) == expected, what=f"{expected}: {lines(tab)}")
    assert sorted(status(tab)[0] for tab in rest) == ["follower", "leader"]
    wait_for(lambda: chat.parked("room:lobby") == 1, what="one poll again")


def test_bad_input_to_the_application_gets_a_json_error(chat: Chat) -> None:
    response = httpx.post(f"{chat.url}/api/messages", content=b"{")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"
    response = httpx.post(f"{chat.url}/api/join", json={"room": "12,3", "name": "alice"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_body"
    response = httpx.post(
        f"{chat.url}/api/messages", json={"room": "lobby", "name": "alice", "text": " "}
    )
    assert response.status_code == 400
    response = httpx.get(f"{chat.url}/api/join")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"

"""The shortest round trip: create, subscribe, publish, receive."""

from __future__ import annotations

import threading

from tests.helpers import ServerProcess, wait_for


def test_publish_reaches_parked_subscriber(server: ServerProcess) -> None:
    client = server.client()
    channel = client.post("/channels").json()["id"]
    answers: list[dict[str, object]] = []

    def subscribe() -> None:
        sub = server.client()
        answers.append(sub.get("/subscribe", params={"channels": channel, "timeout": 10}).json())

    thread = threading.Thread(target=subscribe)
    thread.start()
    wait_for(lambda: client.get(f"/channels/{channel}").json()["subscribers"] == 1)
    published = client.post("/publish", json={"channels": [channel], "data": {"n": 1}})
    assert published.status_code == 201
    thread.join(timeout=10)
    (answer,) = answers
    assert answer["messages"] == [
        {
            "id": published.json()["id"],
            "time": published.json()["time"],
            "channels": [channel],
            "data": {"n": 1},
        }
    ]
    assert answer["cursor"] == published.json()["id"]
    assert answer["gap"] is False


def test_the_start_page_links_to_what_a_new_user_needs(server: ServerProcess) -> None:
    response = server.client().get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    for target in ("/dashboard", "/openapi.yaml", "/health", "/metrics"):
        assert f'<a href="{target}">' in response.text
    # The how-to: create, subscribe, publish.
    for call in ("-X POST $url/channels", "$url/subscribe?channels=news", "-X POST $url/publish"):
        assert call in response.text

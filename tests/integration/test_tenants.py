"""Two applications sharing one PushUp (`--publisher-keys`): each key creates, publishes
to, renews, closes, reads, lists and sees the presence of only its own channels, on the
embedded engine (across a restart too) and on a Redis that two nodes share; and the
server's own channel `$events` is no key's."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, wait_for

BLOG = "blog-secret-0123456789abcdefghijklmnop"
SHOP = "shop-secret-0123456789abcdefghijklmnop"
OPS = "ops-secret-0123456789abcdefghijklmnopq"
KEYS = f"""
[keys.blog]
secret = "{BLOG}"
prefixes = ["blog:"]

[keys.shop]
secret = "{SHOP}"
prefixes = ["shop:"]

[keys.ops]
secret = "{OPS}"
prefixes = [""]
admin = true
"""


@pytest.fixture
def keys_file(tmp_path: Path) -> str:
    path = tmp_path / "keys.toml"
    path.write_text(KEYS)
    return str(path)


def client(server: ServerProcess, secret: str) -> httpx.Client:
    return server.client(headers={"Authorization": f"Bearer {secret}"})


def forbidden(response: httpx.Response, *channels: int | str) -> None:
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"] == "forbidden"
    assert body["channels"] == list(channels)


def cached(server: ServerProcess, channel: int | str) -> list[object]:
    """The data of every message cached on `channel` (a poll that does not wait)."""
    response = server.client().get("/subscribe", params={"channels": channel, "timeout": 0})
    assert response.status_code == 200, response.text
    return [message["data"] for message in response.json()["messages"]]


def test_a_key_uses_its_own_named_channels_only(
    server_factory: ServerFactory, keys_file: str
) -> None:
    server = server_factory("--publisher-keys", keys_file)
    blog, shop = client(server, BLOG), client(server, SHOP)
    assert blog.post("/channels", json={"name": "blog:posts"}).status_code == 201
    assert shop.post("/channels", json={"name": "shop:cart"}).status_code == 201
    forbidden(blog.post("/channels", json={"name": "shop:orders"}), "shop:orders")
    forbidden(blog.post("/channels", json={"name": "shop:cart", "exist_ok": True}), "shop:cart")
    forbidden(blog.post("/publish", json={"channels": ["shop:cart"], "data": 1}), "shop:cart")
    forbidden(blog.post("/channels/shop:cart/renew"), "shop:cart")
    forbidden(blog.get("/channels/shop:cart"), "shop:cart")
    forbidden(blog.delete("/channels/shop:cart"), "shop:cart")
    assert cached(server, "shop:cart") == []
    # Its own, by name or by id, all of it.
    channel = blog.get("/channels/blog:posts").json()["id"]
    assert blog.post("/publish", json={"channels": [channel], "data": "hi"}).status_code == 201
    assert blog.post("/channels/blog:posts/renew").status_code == 200
    assert cached(server, "blog:posts") == ["hi"]
    assert blog.delete(f"/channels/{channel}").status_code == 204
    # The other key still has its channel, untouched.
    assert shop.get("/channels/shop:cart").status_code == 200


def test_an_unnamed_channel_belongs_to_the_key_that_made_it(
    server_factory: ServerFactory, keys_file: str
) -> None:
    server = server_factory("--publisher-keys", keys_file)
    blog, shop, ops = client(server, BLOG), client(server, SHOP), client(server, OPS)
    mine = blog.post("/channels").json()["id"]
    forbidden(shop.post("/publish", json={"channels": [mine], "data": 1}), mine)
    forbidden(shop.post(f"/channels/{mine}/renew"), mine)
    forbidden(shop.get(f"/channels/{mine}"), mine)
    forbidden(shop.delete(f"/channels/{mine}"), mine)
    assert blog.post("/publish", json={"channels": [mine], "data": 1}).status_code == 201
    assert blog.get(f"/channels/{mine}").status_code == 200
    # The key of every channel ("" prefix) may touch it too.
    assert ops.post(f"/channels/{mine}/renew").status_code == 200
    # An unknown id is not found, whoever asks.
    assert shop.get("/channels/12345").status_code == 404


def test_a_publication_with_one_channel_not_the_keys_is_refused_whole(
    server_factory: ServerFactory, keys_file: str
) -> None:
    server = server_factory("--publisher-keys", keys_file)
    blog, shop = client(server, BLOG), client(server, SHOP)
    blog.post("/channels", json={"name": "blog:a"})
    theirs = shop.post("/channels").json()["id"]
    shop.post("/channels", json={"name": "shop:b"})
    forbidden(
        blog.post("/publish", json={"channels": ["blog:a", theirs, "shop:b"], "data": 1}),
        theirs,
        "shop:b",
    )
    batch = {
        "messages": [
            {"channels": ["blog:a"], "data": 1},
            {"channels": ["shop:b"], "data": 2},
        ]
    }
    forbidden(blog.post("/publish/batch", json=batch), "shop:b")
    assert cached(server, "blog:a") == []
    assert cached(server, "shop:b") == []


def listed(http: httpx.Client, **params: object) -> list[int | str]:
    """Every channel a key lists (ids, or names with a prefix), page after page."""
    found: list[int | str] = []
    after = None
    while True:
        answer = http.get("/channels", params={**params, **({"after": after} if after else {})})
        assert answer.status_code == 200, answer.text
        page = answer.json()
        found += [c["name"] if params.get("prefix") else c["id"] for c in page["channels"]]
        if page["next"] is None:
            assert len(found) == len(set(found))
            return found
        after = page["next"]


def test_each_key_lists_only_its_own_channels(
    server_factory: ServerFactory, keys_file: str
) -> None:
    server = server_factory("--publisher-keys", keys_file)
    blog, shop, ops = client(server, BLOG), client(server, SHOP), client(server, OPS)
    made = {}
    for key, body in (
        (blog, {"name": "blog:a"}),
        (shop, {}),
        (blog, {}),
        (shop, {"name": "shop:cart"}),
        (ops, {}),
        (blog, {"name": "blog:b"}),
    ):
        answer = key.post("/channels", json=body)
        assert answer.status_code == 201, answer.text
        made[body.get("name") or f"#{len(made)}"] = answer.json()["id"]
    blogs, shops, opss = made["#2"], made["#1"], made["#4"]
    for limit in (1, 50):
        assert listed(blog, limit=limit) == [made["blog:a"], blogs, made["blog:b"]]
        assert listed(shop, limit=limit) == [shops, made["shop:cart"]]
        assert listed(ops, limit=limit) == sorted(made.values())
        assert listed(blog, prefix="blog:", limit=limit) == ["blog:a", "blog:b"]
        assert listed(blog, prefix="b", limit=limit) == ["blog:a", "blog:b"]
        # Another key's prefix lists nothing, as a name outside every prefix does.
        assert listed(blog, prefix="shop:", limit=limit) == []
        assert listed(shop, prefix="", limit=limit) == [shops, made["shop:cart"]]
    assert opss not in listed(blog) + listed(shop)


def test_metrics_and_the_dashboard_are_for_admin_keys_and_count_per_key(
    server_factory: ServerFactory, keys_file: str
) -> None:
    server = server_factory("--publisher-keys", keys_file)
    blog, shop, ops = client(server, BLOG), client(server, SHOP), client(server, OPS)
    blog.post("/channels", json={"name": "blog:a"})
    for _ in range(3):
        blog.post("/publish", json={"channels": ["blog:a"], "data": 1})
    forbidden(shop.post("/publish", json={"channels": ["blog:a"], "data": 1}), "blog:a")
    for path in ("/metrics", "/dashboard"):
        assert blog.get(path).status_code == 403
        assert server.client().get(path).status_code == 401
    assert ops.get("/dashboard").status_code == 200
    text = ops.get("/metrics").text
    assert 'pushup_key_publications_total{key="blog",worker="all"} 3.0' in text
    assert 'pushup_key_errors_total{code="forbidden",key="shop",worker="all"} 1.0' in text
    # The banner and the log of a refusal name the keys, never their secrets.
    assert "keys.toml (--publisher-keys): blog, shop, ops" in server.log()
    assert "answered 403 forbidden to POST /publish (publisher key shop)" in server.log()
    for secret in (BLOG, SHOP, OPS):
        assert secret not in text
        assert secret not in server.log()


def test_the_dashboard_takes_an_admin_key_once_and_keeps_a_cookie_of_its_own(
    server_factory: ServerFactory, keys_file: str
) -> None:
    server = server_factory("--publisher-keys", keys_file)
    browser = server.client()
    assert browser.get("/dashboard", params={"key": BLOG}).status_code == 403
    assert browser.get("/dashboard", params={"key": "wrong"}).status_code == 401
    traded = browser.get("/dashboard", params={"key": OPS})
    assert traded.status_code == 303
    assert OPS not in traded.headers["set-cookie"]
    assert browser.get("/dashboard").status_code == 200  # with the cookie
    # The cookie opens the dashboard only, and publishes nothing.
    assert browser.post("/channels").status_code == 401


def test_owners_outlive_a_restart_of_the_embedded_engine(
    server_factory: ServerFactory, keys_file: str, tmp_path: Path
) -> None:
    flags = ("--publisher-keys", keys_file, "--data-dir", str(tmp_path / "data"))
    first = server_factory(*flags)
    mine = client(first, BLOG).post("/channels").json()["id"]
    first.stop()
    second = server_factory(*flags)
    forbidden(client(second, SHOP).post("/publish", json={"channels": [mine], "data": 1}), mine)
    assert (
        client(second, BLOG).post("/publish", json={"channels": [mine], "data": 1}).status_code
        == 201
    )


def test_two_nodes_on_one_redis_keep_each_keys_channels_apart(
    server_factory: ServerFactory, keys_file: str, redis_url: str
) -> None:
    flags = ("--publisher-keys", keys_file, "--engine", redis_url)
    one, two = server_factory(*flags), server_factory(*flags)
    mine = client(one, BLOG).post("/channels").json()["id"]
    client(one, SHOP).post("/channels", json={"name": "shop:cart"})
    # The other node knows the owner from Redis.
    forbidden(client(two, SHOP).post("/publish", json={"channels": [mine], "data": 1}), mine)
    forbidden(client(two, SHOP).delete(f"/channels/{mine}"), mine)
    forbidden(
        client(two, BLOG).post("/publish", json={"channels": ["shop:cart"], "data": 1}), "shop:cart"
    )
    published = client(two, BLOG).post("/publish", json={"channels": [mine], "data": "ok"})
    assert published.status_code == 201
    assert cached(one, mine) == ["ok"]
    assert cached(two, "shop:cart") == []
    # Each lists its own through the other node too.
    assert listed(client(two, BLOG)) == [mine]
    assert listed(client(two, SHOP), prefix="shop:") == ["shop:cart"]


def test_each_key_reads_the_presence_of_its_own_channels_only(
    server_factory: ServerFactory, keys_file: str
) -> None:
    server = server_factory("--publisher-keys", keys_file)
    blog, shop, ops = client(server, BLOG), client(server, SHOP), client(server, OPS)
    assert shop.post("/channels", json={"name": "shop:cart"}).status_code == 201
    mine = blog.post("/channels").json()["id"]
    forbidden(blog.get("/channels/shop:cart/presence"), "shop:cart")
    forbidden(shop.get(f"/channels/{mine}/presence"), mine)
    for key, channel in ((blog, mine), (shop, "shop:cart"), (ops, "shop:cart"), (ops, mine)):
        answer = key.get(f"/channels/{channel}/presence")
        assert answer.status_code == 200, answer.text
        assert answer.json()["connections"] == 0


def test_the_servers_own_channels_stay_its_own_whatever_the_key(
    server_factory: ServerFactory, keys_file: str
) -> None:
    """`$events` is written by no key, admin keys too, and listed to none; its events,
    which tell of every key's channels, are read by a key allowed every channel only."""
    server = server_factory("--publisher-keys", keys_file, "--channel-events")
    blog, ops = client(server, BLOG), client(server, OPS)
    made = blog.post("/channels", json={"name": "blog:a"})
    assert made.status_code == 201, made.text
    events_id = ops.get("/channels/$events").json()["id"]
    for ref in ("$events", events_id):
        forbidden(ops.post("/publish", json={"channels": [ref], "data": 1}), ref)
        forbidden(ops.post(f"/channels/{ref}/renew"), ref)
        forbidden(ops.delete(f"/channels/{ref}"), ref)
        forbidden(blog.post("/publish", json={"channels": [ref], "data": 1}), ref)
    for limit in (1, 50):
        assert listed(ops, limit=limit) == [made.json()["id"]]
        assert listed(ops, prefix="$", limit=limit) == []
    refused = blog.get("/subscribe/events", params={"timeout": 0})
    assert refused.status_code == 403, refused.text
    assert "channel events" in refused.json()["detail"]

    def told() -> list[object] | None:
        answer = ops.get("/subscribe/events", params={"timeout": 0})
        assert answer.status_code == 200, answer.text
        names = [message["data"]["name"] for message in answer.json()["messages"]]
        return names or None

    assert wait_for(told, what="the creation of blog:a told") == ["blog:a"]


def test_each_key_has_its_own_idempotency_keys(
    server_factory: ServerFactory, keys_file: str
) -> None:
    server = server_factory("--publisher-keys", keys_file)
    blog, ops = client(server, BLOG), client(server, OPS)
    assert blog.post("/channels", json={"name": "blog:a"}).status_code == 201
    body, once = {"channels": ["blog:a"], "data": 1}, {"Idempotency-Key": "shared"}
    first = blog.post("/publish", json=body, headers=once)
    again = blog.post("/publish", json=body, headers=once)
    other = ops.post("/publish", json=body, headers=once)
    assert [a.status_code for a in (first, again, other)] == [201, 201, 201]
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    assert "idempotent-replayed" not in other.headers
    assert other.json()["id"] != first.json()["id"]
    assert cached(server, "blog:a") == [1, 1]

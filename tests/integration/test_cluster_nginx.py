"""nginx running deploy/nginx.conf in front of PushUp and a web application (the paper's
figure 4): polls go to PushUp, everything else to the application, and publishing
through nginx is refused unless PushUp has a publisher key."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import websockets.sync.client

from tests.conftest import ServerFactory
from tests.helpers import ServerProcess, readme_blocks, wait_for
from tests.proxies import NGINX, Nginx

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 20.0
KEY = "nginx-publisher-key"
NginxFactory = Callable[[ServerProcess], Nginx]


class _App(BaseHTTPRequestHandler):
    """The web application: says who it is and what it was asked."""

    protocol_version = "HTTP/1.1"  # keep-alive, as nginx's upstream connections use

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.dumps(
            {
                "app": "webapp",
                "method": self.command,
                "path": self.path,
                "body": self.rfile.read(length).decode(),
                "forwarded_for": self.headers.get("X-Forwarded-For"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads answers, not logs."""


@pytest.fixture
def webapp() -> Iterator[str]:
    """A tiny web application on a free port, in a thread; its address."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def nginx_factory(webapp: str) -> Iterator[NginxFactory]:
    """Start nginx in front of a node and the web application; stopped after the test."""
    started: list[Nginx] = []

    def start(node: ServerProcess) -> Nginx:
        proxy = Nginx(f"127.0.0.1:{node.port}", webapp)
        started.append(proxy)
        proxy.start()
        return proxy

    yield start
    for proxy in started:
        proxy.cleanup()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=2)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


def test_polls_go_to_pushup_and_everything_else_to_the_web_app(
    server_factory: ServerFactory, nginx_factory: NginxFactory, pool: ThreadPoolExecutor
) -> None:
    node = server_factory()
    proxy = nginx_factory(node)
    direct = node.client()
    with httpx.Client(base_url=proxy.url, timeout=60.0) as front:
        page = front.get("/")
        assert page.status_code == 200
        assert page.json()["app"] == "webapp" and page.json()["path"] == "/"
        form = front.post("/anything", content=b"a=1")
        assert (form.json()["app"], form.json()["method"], form.json()["body"]) == (
            "webapp",
            "POST",
            "a=1",
        )
        assert form.json()["forwarded_for"] == "127.0.0.1"
        # Publisher paths at the root are the application's: only polls are intercepted.
        assert front.post("/publish", json={}).json()["app"] == "webapp"

        channel = direct.post("/channels", json={"name": "news"}).json()["id"]
        now = front.get("/subscribe", params={"channels": "news", "timeout": 0})
        assert now.status_code == 200, now.text
        assert now.json()["messages"] == []
        parked = pool.submit(
            front.get,
            "/subscribe",
            params={"channels": channel, "since": now.json()["cursor"], "timeout": 50},
        )
        wait_for(
            lambda: direct.get(f"/channels/{channel}").json()["subscribers"] == 1,
            timeout=DEADLINE_S,
            what="the poll through nginx to park",
        )
        published = direct.post("/publish", json={"channels": [channel], "data": "hi"})
        assert published.status_code == 201, published.text
        response = parked.result(timeout=DEADLINE_S)
        assert response.status_code == 200, response.text
        assert [(m["id"], m["data"]) for m in response.json()["messages"]] == [
            (published.json()["id"], "hi")
        ]

        # PushUp's API under /pushup/: open to subscribers, closed to publishers, since
        # nginx says the request was relayed (X-Forwarded-For) and PushUp has no key.
        assert front.get("/pushup/health").json() == {"status": "ok"}
        for method, path in [("POST", "/pushup/publish"), ("POST", "/pushup/channels")]:
            refused = front.request(method, path, json={"channels": [channel], "data": 1})
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"] == "forbidden"


def test_publishers_through_nginx_need_the_publisher_key(
    server_factory: ServerFactory, nginx_factory: NginxFactory
) -> None:
    node = server_factory("--publisher-key", KEY)
    proxy = nginx_factory(node)
    with httpx.Client(base_url=proxy.url, timeout=60.0) as front:
        channel = front.post("/pushup/channels", headers={"Authorization": f"Bearer {KEY}"}).json()[
            "id"
        ]
        body = {"channels": [channel], "data": "with the key"}
        assert front.post("/pushup/publish", json=body).status_code == 401
        published = front.post(
            "/pushup/publish", json=body, headers={"Authorization": f"Bearer {KEY}"}
        )
        assert published.status_code == 201, published.text
        got = front.get("/subscribe", params={"channels": channel, "timeout": 0}).json()
        assert [m["data"] for m in got["messages"]] == ["with the key"]


def test_streams_and_the_browser_client_pass_through_nginx(
    server_factory: ServerFactory, nginx_factory: NginxFactory
) -> None:
    node = server_factory()
    proxy = nginx_factory(node)
    with (
        httpx.Client(base_url=node.url, timeout=60.0) as direct,
        httpx.Client(base_url=proxy.url, timeout=60.0) as front,
    ):
        channel = direct.post("/channels", json={}).json()["id"]
        script = front.get("/pushup.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")

        with front.stream("GET", "/subscribe/sse", params={"channels": channel}) as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            wait_for(
                lambda: direct.get(f"/channels/{channel}").json()["subscribers"] == 1,
                timeout=DEADLINE_S,
                what="the SSE stream through nginx to subscribe",
            )
            sent = direct.post("/publish", json={"channels": [channel], "data": "sse"}).json()
            lines = events.iter_lines()
            assert next(line for line in lines if line.startswith("id:")) == f"id: {sent['id']}"
            data = json.loads(next(line for line in lines if line.startswith("data:"))[5:])
            assert data["data"] == "sse"

        ws_url = proxy.url.replace("http://", "ws://") + f"/subscribe/ws?channels={channel}"
        with websockets.sync.client.connect(ws_url, open_timeout=DEADLINE_S) as socket:
            # Cached messages come first: the one published above.
            assert json.loads(socket.recv(timeout=DEADLINE_S))["data"] == "sse"
            sent = direct.post("/publish", json={"channels": [channel], "data": "ws"}).json()
            frame = json.loads(socket.recv(timeout=DEADLINE_S))
            assert (frame["id"], frame["data"]) == (sent["id"], "ws")


def test_the_deploy_readmes_nginx_commands_make_a_file_nginx_accepts(tmp_path: Path) -> None:
    """deploy/README.md's commands as written, on a machine without their folders: only
    the two system paths move under a temporary folder, and nginx checks the file it
    made (`-t`, its own error log aside) rather than serving on port 80."""
    (block,) = [b for b in readme_blocks("sh", "deploy/README.md") if "envsubst" in b]
    assert block.count("\nnginx -p ") == 1, block
    script = (
        block.replace("/var/lib/pushup-nginx", f"{tmp_path}/var/lib/pushup-nginx")
        .replace("/etc/pushup", f"{tmp_path}/etc/pushup")
        .replace("\nnginx -p ", f"\n{NGINX} -t -e {tmp_path}/error.log -p ")
    )
    run = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "test is successful" in run.stderr
    conf = (tmp_path / "etc/pushup/nginx.conf").read_text()
    assert re.findall(r"\$\{PUSHUP_[A-Z_]+\}", conf) == []

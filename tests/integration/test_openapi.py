"""The OpenAPI description (docs/openapi.yaml, served at /openapi.yaml) against a real
server.

Schemathesis generates requests from the description for every operation, valid and
invalid ones, sends them to a live server and checks each answer: no 5xx, a documented
status, a body that validates against the documented schema, the documented content type
and headers, valid input accepted and invalid input rejected. Bounded and deterministic:
a fixed number of examples per operation from a fixed seed. Long polls park at most
`MAX_TIMEOUT` (the server runs with that `--max-timeout`; the description's `timeout`
maximum is lowered to match), streams are read for `STREAM_READ_S`.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import schemathesis
import yaml
from schemathesis import Case
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.openapi.checks import RejectedPositiveData

import pushup
from pushup.http import router
from tests.helpers import ServerProcess, start_server

DOCS_COPY = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
PACKAGE_COPY = Path(pushup.__file__).parent / "static" / "openapi.yaml"

KEY = "fuzzing-publisher-key"
MAX_TIMEOUT = 0.3
PING_INTERVAL = 0.2
STREAM_READ_S = 0.5
# Named by the description's examples, so the examples phase reaches real channels.
EXAMPLE_CHANNELS = ("news", "tag:c++")
MAX_EXAMPLES = 40
SEED = 20261127


def load_description() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(PACKAGE_COPY.read_text(encoding="utf-8"))
    return raw


# -- the document ------------------------------------------------------------------------


def test_the_docs_copy_is_the_package_file() -> None:
    assert DOCS_COPY.read_bytes() == PACKAGE_COPY.read_bytes()


def test_the_description_is_valid_openapi() -> None:
    schemathesis.openapi.from_dict(load_description()).validate()


def test_the_description_names_this_release() -> None:
    assert load_description()["info"]["version"] == pushup.__version__


def _documented_routes() -> set[tuple[str, str]]:
    paths: dict[str, dict[str, Any]] = load_description()["paths"]
    methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
    return {
        (path, method.upper())
        for path, item in paths.items()
        for method in item
        if method in methods
    }


def _served_routes() -> set[tuple[str, str]]:
    """The router's own table: each parameter segment is the description's `{channel}`."""
    routes = set()
    for pattern, methods, _ in router._ROUTES:
        path = "/" + "/".join("{channel}" if part is None else part for part in pattern)
        routes.update((path, method) for method in methods)
    return routes


def test_every_route_is_described_and_nothing_else() -> None:
    assert _documented_routes() == _served_routes()


def test_the_server_serves_the_package_file(server: ServerProcess) -> None:
    body = PACKAGE_COPY.read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    with httpx.Client(base_url=server.url) as client:
        response = client.get("/openapi.yaml")
        assert response.status_code == 200
        assert response.content == body
        assert response.headers["content-type"] == "application/yaml"
        assert response.headers["etag"] == etag
        assert response.headers["cache-control"] == "public, max-age=300"
        again = client.get("/openapi.yaml", headers={"If-None-Match": f'"other", {etag}'})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert client.post("/openapi.yaml").status_code == 405


# -- schemathesis against a live server ------------------------------------------------


@pytest.fixture(scope="module")
def fuzzed_server() -> Iterator[ServerProcess]:
    server = start_server(
        "--publisher-key",
        KEY,
        "--max-timeout",
        str(MAX_TIMEOUT),
        "--ping-interval",
        str(PING_INTERVAL),
    )
    yield server
    alive = server.alive()
    server.stop()
    log = server.log()
    assert alive, f"the server died while fuzzed:\n{log}"
    assert "Traceback" not in log, f"the server logged a traceback:\n{log}"


@pytest.fixture(scope="module")
def publisher(fuzzed_server: ServerProcess) -> httpx.Client:
    return fuzzed_server.client(headers={"Authorization": f"Bearer {KEY}"})


def _ensure_example_channels(publisher: httpx.Client) -> None:
    """The channels the examples name exist, each with a cached message (a stream
    opened on them has something to send at once)."""
    for name in EXAMPLE_CHANNELS:
        created = publisher.post("/channels", json={"name": name})
        assert created.status_code in (201, 409), created.text
        if created.status_code == 201:
            published = publisher.post("/publish", json={"channels": [name], "data": name})
            assert published.status_code == 201, published.text


def fuzzing_config(auth: dict[str, Any]) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "request-timeout": 10,
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "auth": {"openapi": auth},
            # The coverage phase builds its cases while pytest collects, seconds for
            # every run of the suite: examples and random generation are enough here.
            "phases": {"coverage": {"enabled": False}},
            "checks": {
                "enabled": False,
                "not_a_server_error": {"enabled": True},
                "status_code_conformance": {"enabled": True},
                "content_type_conformance": {"enabled": True},
                "response_headers_conformance": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
                # Valid input to /subscribe/ws without a WebSocket handshake gets 426; an
                # Idempotency-Key generated twice with two bodies, 422.
                "positive_data_acceptance": {
                    "enabled": True,
                    "expected-statuses": [
                        *("2xx", "3xx", "401", "403", "404", "409", "422", "426", "429")
                    ],
                },
                "negative_data_rejection": {"enabled": True},
            },
        }
    )


def fuzzed_description() -> dict[str, Any]:
    raw = load_description()
    # The server's own --max-timeout, so a fuzzed poll parks at most that long.
    raw["components"]["parameters"]["Timeout"]["schema"]["maximum"] = MAX_TIMEOUT
    return raw


def call(case: Case, server: ServerProcess) -> None:
    if case.path == "/subscribe/sse":
        # A stream never ends by itself: read it for a while (pings keep data coming).
        case.call_and_validate(base_url=server.url, timeout=STREAM_READ_S)
    else:
        case.call_and_validate(base_url=server.url)


# Rules the description states in prose, beyond what its schemas can say: a positive
# case that breaks one is rightly refused. (JSON Schema counts 17.0 as an integer.)
PROSE_RULES = re.compile(
    r"start must not be after end|channels must not repeat"
    r"|channel -?[0-9]+\.0 is neither an id nor a name"
    r"|exist_ok needs a name: .*|integers must fit in 64 bits, not -?[0-9]+"
    r"|last and limit cannot be combined .*|(last|limit) must be a whole number from 1 to 10000"
    r"|(message_ttl|max_messages) [0-9.e+]+ is above this server's .*"
    r"|after must be the next of the page before: a channel id"
)


def not_a_prose_rule(
    context: schemathesis.HookContext, failure: Any, case: Case, response: schemathesis.Response
) -> bool:
    """Keep every failure but valid-looking input refused by a rule of the prose, and
    the 426 of /subscribe/ws to a request without a WebSocket handshake, which comes
    before any check of its query, as the description says."""
    if isinstance(failure, AcceptedNegativeData) and response.status_code == 426:
        return False
    if not isinstance(failure, RejectedPositiveData) or response.status_code != 400:
        return True
    return not PROSE_RULES.fullmatch(response.json().get("detail", ""))


schema = schemathesis.openapi.from_dict(
    fuzzed_description(), config=fuzzing_config({"publisherKey": {"bearer": KEY}})
)
schema.hook("filter_failure")(not_a_prose_rule)


@schema.parametrize()
def test_the_server_answers_as_described(
    case: Case, fuzzed_server: ServerProcess, publisher: httpx.Client
) -> None:
    # A fuzzed DELETE may have closed an example channel: open it again.
    _ensure_example_channels(publisher)
    call(case, fuzzed_server)


# -- the subscriber side with tokens and CORS on -----------------------------------------

SECRET = "a subscriber secret of 32 bytes or more, for tests"


@pytest.fixture(scope="module")
def guarded_server() -> Iterator[ServerProcess]:
    server = start_server(
        "--subscriber-secret",
        SECRET,
        "--cors-origins",
        "https://app.example",
        "--max-timeout",
        str(MAX_TIMEOUT),
        "--ping-interval",
        str(PING_INTERVAL),
    )
    with server.client() as client:  # loopback, no key set: may publish
        _ensure_example_channels(client)
    yield server
    alive = server.alive()
    server.stop()
    log = server.log()
    assert alive, f"the server died while fuzzed:\n{log}"
    assert "Traceback" not in log, f"the server logged a traceback:\n{log}"


# Grants the example channels only: any other channel is a 403.
TOKEN = jwt.encode(
    {"channels": list(EXAMPLE_CHANNELS), "exp": int(time.time()) + 3600}, SECRET, "HS256"
)
guarded = schemathesis.openapi.from_dict(
    fuzzed_description(), config=fuzzing_config({"subscriberToken": {"bearer": TOKEN}})
).include(tag="subscriber")
guarded.hook("filter_failure")(not_a_prose_rule)


@guarded.parametrize()
def test_the_guarded_subscriber_side_answers_as_described(
    case: Case, guarded_server: ServerProcess
) -> None:
    call(case, guarded_server)


# -- the publisher side with several keys: a key kept to its channels --------------------

TENANT_KEY = "a-tenants-publisher-key-of-32-bytes-or-more"
ADMIN_KEY = "the-admins-publisher-key-of-32-bytes-or-more"


@pytest.fixture(scope="module")
def tenant_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The fuzzing key may use `tag:` channels only: the example channel `news`, and
    most generated names and ids, are another key's (403 forbidden, with `channels`)."""
    keys = tmp_path_factory.mktemp("keys") / "keys.toml"
    keys.write_text(
        f'[keys.tenant]\nsecret = "{TENANT_KEY}"\nprefixes = ["tag:"]\n'
        f'[keys.admin]\nsecret = "{ADMIN_KEY}"\nprefixes = [""]\nadmin = true\n'
    )
    server = start_server(
        "--publisher-keys",
        str(keys),
        "--max-timeout",
        str(MAX_TIMEOUT),
        "--ping-interval",
        str(PING_INTERVAL),
    )
    yield server
    alive = server.alive()
    server.stop()
    log = server.log()
    assert alive, f"the server died while fuzzed:\n{log}"
    assert "Traceback" not in log, f"the server logged a traceback:\n{log}"


tenants = schemathesis.openapi.from_dict(
    fuzzed_description(), config=fuzzing_config({"publisherKey": {"bearer": TENANT_KEY}})
).include(tag="publisher")
tenants.hook("filter_failure")(not_a_prose_rule)


@tenants.parametrize()
def test_a_key_of_several_is_answered_as_described(
    case: Case, tenant_server: ServerProcess
) -> None:
    with tenant_server.client(headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        _ensure_example_channels(admin)
    call(case, tenant_server)

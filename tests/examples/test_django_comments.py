"""The Django example (examples/django_comments) driven in-process with Django's test
client, on SQLite, against a real PushUp: a committed comment reaches PushUp, a
rolled-back one publishes nothing, and PushUp out of reach does not lose the comment."""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.db import connections, transaction
from django.test import Client, override_settings
from django.test.utils import setup_test_environment, teardown_test_environment

from pushup.client import TransportError
from tests.helpers import ServerProcess, start_server


class Rollback(Exception):
    """A step after the comment failed: the transaction rolls back."""


@pytest.fixture(scope="module")
def pushup() -> Iterator[ServerProcess]:
    server = start_server("--data-dir", "none")
    yield server
    server.stop_checked()


@pytest.fixture(scope="module")
def app(pushup: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The example's module, configured (once per process: Django's settings are
    global) on a fresh SQLite database, its tables made as its docstring says."""
    database: Path = tmp_path_factory.mktemp("django") / "comments.sqlite3"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COMMENTS_DB", str(database))
        patch.setenv("PUSHUP_URL", pushup.url)
        module = importlib.import_module("examples.django_comments.app")
    call_command("migrate", run_syncdb=True, verbosity=0)
    setup_test_environment()
    yield module
    teardown_test_environment()
    connections.close_all()


@pytest.fixture
def client(app: ModuleType) -> Client:
    return Client()


def comments_on(
    pushup: ServerProcess, article: str, since: str | None = None
) -> tuple[list[Any], str]:
    """What PushUp caches for the article's channel (after `since`), and its cursor."""
    params = {"channels": f"article:{article}", "timeout": "0"}
    if since is not None:
        params["since"] = since
    answer = httpx.get(f"{pushup.url}/subscribe", params=params, timeout=10.0)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return [m["data"] for m in body["messages"]], body["cursor"]


def test_a_committed_comment_reaches_pushup(
    app: ModuleType, client: Client, pushup: ServerProcess
) -> None:
    # The first comment on an article makes its channel.
    posted = client.post("/articles/first/comments", {"text": " First! "})
    assert posted.status_code == 201, posted.content
    comment_id = posted.json()["id"]
    assert app.Comment.objects.get(pk=comment_id).text == "First!"
    assert comments_on(pushup, "first")[0] == [{"id": comment_id, "text": "First!"}]

    again = client.post("/articles/first/comments", {"text": "Second"})
    assert again.status_code == 201, again.content
    assert [note["text"] for note in comments_on(pushup, "first")[0]] == ["First!", "Second"]


def test_a_comment_published_again_is_stored_once(
    app: ModuleType, client: Client, pushup: ServerProcess
) -> None:
    """As when a task queue runs the publication again: its key is the comment's."""
    posted = client.post("/articles/twice/comments", {"text": "once"})
    assert posted.status_code == 201, posted.content
    app.publish_comment(posted.json()["id"], "twice", "once")
    assert [note["text"] for note in comments_on(pushup, "twice")[0]] == ["once"]


def test_a_rolled_back_comment_publishes_nothing(
    app: ModuleType, client: Client, pushup: ServerProcess
) -> None:
    assert client.post("/articles/undone/comments", {"text": "before"}).status_code == 201
    _, cursor = comments_on(pushup, "undone")

    with pytest.raises(Rollback), transaction.atomic():
        app.add_comment("undone", "never")
        raise Rollback

    assert not app.Comment.objects.filter(text="never").exists()
    # Publications happen before the request answers: had the rolled-back comment been
    # published, it would come before this one.
    assert client.post("/articles/undone/comments", {"text": "after"}).status_code == 201
    notes, _ = comments_on(pushup, "undone", since=cursor)
    assert [note["text"] for note in notes] == ["after"]


def test_pushup_out_of_reach_fails_the_publication_not_the_comment(
    app: ModuleType, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
    with override_settings(PUSHUP_URL=nowhere):
        posted = client.post("/articles/offline/comments", {"text": "kept"})
    assert posted.status_code == 201, posted.content
    assert app.Comment.objects.filter(pk=posted.json()["id"], text="kept").exists()
    # Django logged the failed callback, with PushUp's error.
    (failure,) = [r for r in caplog.records if "on_commit()" in r.getMessage()]
    assert failure.exc_info is not None
    assert isinstance(failure.exc_info[1], TransportError)


def test_it_runs_as_its_docstring_says(tmp_path: Path) -> None:
    """`python -m examples.django_comments.app migrate --run-syncdb` makes its table (in
    a process of its own: there the module is `__main__`)."""
    database = tmp_path / "comments.sqlite3"
    run = subprocess.run(
        [sys.executable, "-m", "examples.django_comments.app", "migrate", "--run-syncdb"],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "COMMENTS_DB": str(database)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    with contextlib.closing(sqlite3.connect(database)) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert "django_comments_comment" in tables


def test_bad_requests(app: ModuleType, client: Client) -> None:
    empty = client.post("/articles/bad/comments", {"text": "  "})
    assert empty.status_code == 400
    assert empty.json()["error"] == "invalid_body"
    assert client.post("/articles/bad/comments", {"text": "x" * 2001}).status_code == 400
    assert client.get("/articles/bad/comments").status_code == 405
    assert not app.Comment.objects.filter(article="bad").exists()

"""A Django application (settings, view and URLs here, the model in `models.py`) that
publishes each new comment to its article's PushUp channel, `article:<slug>`, once it
is committed.

Run it next to `pushup serve` (PUSHUP_URL, default http://127.0.0.1:7070; and
PUSHUP_PUBLISHER_KEY if the server has a key), on SQLite (COMMENTS_DB, default
./comments.sqlite3):

    python -m examples.django_comments.app migrate --run-syncdb
    python -m examples.django_comments.app runserver 8000
    curl -d text=First! localhost:8000/articles/pushup/comments

The publication waits for the commit (`transaction.on_commit`): a reader told of a
comment finds it in the database, and a transaction that rolls back (a later step of
the same request failed) publishes nothing."""

from __future__ import annotations

import contextlib
import os
import sys

import django
from django.conf import settings
from django.core.management import execute_from_command_line
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.http import require_POST

from pushup.client import ChannelNotFound, NameTaken, Publisher

MAX_TEXT = 2000

settings.configure(
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "an example, not a secret"),
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["examples.django_comments"],
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("COMMENTS_DB", "comments.sqlite3"),
        }
    },
    DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    # Kept short: a real site keeps its sessions, CSRF and authentication middleware.
    MIDDLEWARE=[],
    PUSHUP_URL=os.environ.get("PUSHUP_URL", "http://127.0.0.1:7070"),
    PUSHUP_PUBLISHER_KEY=os.environ.get("PUSHUP_PUBLISHER_KEY"),
)
django.setup()

# Models are defined once the settings are.
from examples.django_comments.models import Comment  # noqa: E402


def article_channel(article: str) -> str:
    return f"article:{article}"


def publish_comment(comment_id: int, article: str, text: str) -> None:
    """Tell the article's readers about a committed comment."""
    channel, note = article_channel(article), {"id": comment_id, "text": text}
    # Named after the comment: called again for it (a task queue's retry), this is
    # stored once within the server's --idempotency-window.
    once = f"comment-{comment_id}"
    # A connection per publication keeps the example short; a busy site keeps a
    # `Publisher` (and its pool of connections) for longer.
    with Publisher(settings.PUSHUP_URL, key=settings.PUSHUP_PUBLISHER_KEY) as publisher:
        try:
            publisher.publish(channel, note, idempotency_key=once)
        except ChannelNotFound:
            # The article's first comment, or its channel expired while idle (the 404
            # stored nothing, so the key is still free).
            with contextlib.suppress(NameTaken):  # another process made it meanwhile
                publisher.create_channel(channel)
            publisher.publish(channel, note, idempotency_key=once)


def add_comment(article: str, text: str) -> Comment:
    """Save a comment; PushUp hears of it when (and if) the transaction commits."""
    comment: Comment = Comment.objects.create(article=article, text=text)
    comment_id = comment.pk

    # Only values travel, not the model. A function, not a `functools.partial`: Django
    # names the callback by its `__qualname__` when it logs its failure.
    def publish() -> None:
        publish_comment(comment_id, article, text)

    # robust: PushUp out of reach makes the publication fail, logged, not the request
    # (the comment is committed by then).
    transaction.on_commit(publish, robust=True)
    return comment


@require_POST
def post_comment(request: HttpRequest, article: str) -> JsonResponse:
    text = request.POST.get("text", "").strip()
    if not 1 <= len(text) <= MAX_TEXT:
        detail = f"text: 1 to {MAX_TEXT} characters"
        return JsonResponse({"error": "invalid_body", "detail": detail}, status=400)
    with transaction.atomic():
        comment = add_comment(article, text)
    return JsonResponse({"id": comment.pk}, status=201)


urlpatterns = [path("articles/<slug:article>/comments", post_comment)]

if __name__ == "__main__":
    execute_from_command_line(sys.argv)

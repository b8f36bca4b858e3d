"""The comment model (here because Django creates the tables of an app's `models`)."""

from __future__ import annotations

from django.db import models


class Comment(models.Model):
    article = models.SlugField()
    text = models.TextField()

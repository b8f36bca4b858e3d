"""The `pushup-journal` benchmark target: PushUp journaling to a data directory of its
own, removed when it stops."""

from __future__ import annotations

import glob
import os
import tempfile

from pushup.bench.targets import TARGET_CHOICES, TARGET_NAMES, make_target
from pushup.bench.targets.process import http_json


def _data_dirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "pushup-bench-data-*")))


def test_the_journal_target_journals_and_cleans_up() -> None:
    assert "pushup-journal" in TARGET_CHOICES and "pushup-journal" not in TARGET_NAMES
    before = _data_dirs()
    target = make_target("pushup-journal")
    assert target.name == "pushup-journal"
    target.start()
    try:
        (data_dir,) = _data_dirs() - before
        channel = target.create_channel()
        status, _ = http_json(
            target.host, target.port, "POST", "/publish", {"channels": [channel], "data": 1}
        )
        assert status == 201
        assert os.path.exists(os.path.join(data_dir, "journal.sqlite3"))
    finally:
        target.stop()
    assert _data_dirs() == before
    target.stop()  # idempotent
